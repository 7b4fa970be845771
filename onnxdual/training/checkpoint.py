"""The files of a training run's directory and what makes a run resumable: ``checkpoint.pt`` (parameters,
optimiser state, every RNG state, configuration, metrics), ``metrics.csv`` and the names of the exported
models.

Each file is written by rank 0 only and atomically (:func:`onnxdual.files.atomic_write`), after every
epoch, so a killed run leaves the last finished epoch intact. ``checkpoint.pt`` holds every random state the
run draws from (torch, numpy, python, the data-order generator and, per rank, the projection generator of
Alg. 1), so a resumed run ends with the same weights as an uninterrupted one. ``metrics.csv`` is rewritten
whole from the checkpoint's history each epoch, so a killed run never leaves a torn or duplicated row.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onnxdual.errors import InvalidInputError
from onnxdual.files import atomic_write
from onnxdual.training.config import TrainConfig, changed_settings
from onnxdual.training.interfaces import TrainData

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
MODEL = "model.onnx"
CHECKPOINT_FORMAT = "onnxdual-train-checkpoint"
METRIC_COLUMNS = ("epoch", "robust_loss", "robust_err_estimate", "clean_err", "eps", "lr", "seconds")


def epoch_model_name(epoch: int) -> str:
    """``epoch_XX.onnx``: the model after epoch ``epoch`` (1-based), with ``export_epochs``."""
    return f"epoch_{epoch:02d}.onnx"


def rng_state(proj_gen: torch.Generator) -> dict[str, Any]:
    """Every random state of this process: torch, numpy, python, the projection generator and CUDA's."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "projection": proj_gen.get_state(),
        "cuda": (torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized()
                 else None),
    }
    return state


def set_rng_state(state: Mapping[str, Any], proj_gen: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    proj_gen.set_state(state["projection"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def data_fingerprint(data: TrainData) -> list[float]:
    """A cheap identity of a training set: its size, shape and sums (a resumed run must use the same)."""
    return [float(data.x.shape[0]), float(data.x[0].numel()), float(data.x.double().sum()),
            float(data.y.double().sum()), float((data.y.double() * torch.arange(data.y.shape[0])).sum())]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``; :class:`InvalidInputError` when it is missing or not a checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InvalidInputError(f"nothing to resume: {path} does not exist") from None
    except Exception as exc:
        raise InvalidInputError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InvalidInputError(f"{path} is not an onnxdual training checkpoint")
    return ckpt


def check_resumable(ckpt: Mapping[str, Any], out: Path, config: TrainConfig, source: str | None,
                    fingerprint: list[float], world_size: int) -> None:
    """Raise :class:`InvalidInputError` unless the run of ``ckpt`` can continue exactly with these settings,
    model source (``None``: the checkpoint's own), training data and process count."""
    changed = changed_settings(TrainConfig.from_dict(ckpt["config"]), config)
    if changed:
        raise InvalidInputError(f"cannot resume {out}: the run used different settings "
                                f"({', '.join(changed)})")
    if source is not None and source != ckpt["source"]:
        raise InvalidInputError(f"cannot resume {out}: it trained {ckpt['source']}, not {source}")
    if ckpt["fingerprint"] != fingerprint:
        raise InvalidInputError(f"cannot resume {out}: the training data differs from the checkpoint's")
    if int(ckpt["world_size"]) != world_size:
        raise InvalidInputError(f"cannot resume {out} exactly: it was written by {ckpt['world_size']} "
                                f"process(es), this run has {world_size}")


def write_checkpoint(path: Path, *, epoch: int, step: int, model: Mapping[str, Any],
                     optimizer: Mapping[str, Any], template: bytes, source: str, config: TrainConfig,
                     fingerprint: list[float], world_size: int, data_order: torch.Tensor,
                     rank_states: list[Any], history: list[dict[str, float]]) -> None:
    """Write the checkpoint after epoch ``epoch`` (1-based; ``step`` optimiser steps done) atomically."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT, "version": 1, "epoch": epoch, "step": step, "model": model,
        "optimizer": optimizer, "template": template, "source": source, "config": config.to_dict(),
        "fingerprint": fingerprint, "world_size": world_size,
        "rng": {"data_order": data_order, "ranks": rank_states}, "history": history,
    }
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    atomic_write(path, buf.getvalue())


def write_metrics_csv(path: Path, history: Sequence[Mapping[str, float]]) -> None:
    """``metrics.csv`` from the whole history, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(METRIC_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in METRIC_COLUMNS})
    atomic_write(path, buf.getvalue().encode())


__all__ = ["CHECKPOINT", "METRICS", "MODEL", "CHECKPOINT_FORMAT", "METRIC_COLUMNS", "epoch_model_name",
           "rng_state", "set_rng_state", "data_fingerprint", "read_checkpoint", "check_resumable",
           "write_checkpoint", "write_metrics_csv"]
