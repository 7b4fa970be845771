"""What training exchanges with its callers: the data it takes (:class:`TrainData`, :class:`ArrayData`),
the progress hooks it calls (:class:`TrainCallback`) and what a run returns (:class:`TrainResult`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from torch import Tensor, fx

from onnxdual.training.config import TrainConfig


class TrainData(Protocol):
    """What training needs of a data set (``onnxdual.data.Dataset`` has it)."""

    x: Tensor
    y: Tensor
    name: str
    num_classes: int


@dataclass(frozen=True)
class ArrayData:
    """A plain in-memory data set (e.g. the subset a cascade stage trains on)."""

    x: Tensor
    y: Tensor
    name: str
    num_classes: int


class TrainCallback:
    """Progress hooks; override what you need. Called on every rank (a CLI shows progress on rank 0)."""

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        """Epoch ``epoch`` (1-based) of ``epochs`` begins; it has ``steps`` optimiser steps."""

    def on_step(self, i: int, n: int, metrics: Mapping[str, float]) -> None:
        """Step ``i`` (1-based) of ``n`` in the epoch is done; ``metrics`` of this rank's shard."""

    def on_epoch(self, metrics: Mapping[str, float]) -> None:
        """An epoch is done and checkpointed; ``metrics`` is its ``metrics.csv`` row (all ranks)."""


@dataclass
class TrainResult:
    """What :func:`onnxdual.training.train` produced."""

    out_dir: Path
    model_path: Path
    history: list[dict[str, float]]
    net: fx.GraphModule
    config: TrainConfig
    trainable: list[str]
    resumed_from_epoch: int | None = None
    seconds: float = 0.0


__all__ = ["TrainData", "ArrayData", "TrainCallback", "TrainResult"]
