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
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onnxdual.errors import CheckpointError, InvalidInputError
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
    position = torch.arange(data.y.shape[0], device=data.y.device)  # the data may live on a GPU
    return [float(data.x.shape[0]), float(data.x[0].numel()), float(data.x.double().sum()),
            float(data.y.double().sum()), float((data.y.double() * position).sum())]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, its structure checked (:func:`check_structure`); :class:`InvalidInputError`
    when it is missing, :class:`CheckpointError` naming the damaged part when it is not a whole checkpoint."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidInputError(f"nothing to resume: {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is damaged: the file is empty")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = re.sub(r"\x1b\[[0-9;]*m", "", (str(exc).splitlines() or [""])[0]) or type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is damaged: it cannot be read ({first[:200]})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an onnxdual training checkpoint")
    check_structure(ckpt, path)
    return ckpt


#: every part of a checkpoint and the type it must have
_PARTS: dict[str, type | tuple[type, ...]] = {
    "version": int, "epoch": int, "step": int, "model": dict, "optimizer": dict, "template": bytes,
    "source": str, "config": dict, "fingerprint": list, "world_size": int, "rng": dict, "history": list}


def _damaged(path: Path, part: str, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is damaged: {part} {why}")


def _check_rng(path: Path, rng: Mapping[str, Any], world_size: int) -> None:
    """Each random state has the type and size this torch/numpy/python restores (a wrong size would end in
    an internal error deep in ``set_rng_state``)."""
    generator_size = torch.Generator().get_state().numel()
    order = rng.get("data_order")
    if not isinstance(order, torch.Tensor) or order.dtype != torch.uint8 or order.numel() != generator_size:
        raise _damaged(path, "the data-order random state",
                       f"is not a generator state of {generator_size} bytes")
    ranks = rng.get("ranks")
    if not isinstance(ranks, list) or len(ranks) != world_size:
        raise _damaged(path, "the per-process random states", f"are not a list of {world_size}")
    for r, state in enumerate(ranks):
        what = f"the random state of process {r}"
        if not isinstance(state, dict) or not {"torch", "numpy", "python", "projection"} <= set(state):
            raise _damaged(path, what, "lacks torch, numpy, python or projection")
        for key in ("torch", "projection"):
            t = state[key]
            if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or \
                    (t.numel() != generator_size and not (key == "projection" and t.numel() > 0)):
                raise _damaged(path, f"{what} ({key})", f"is not a generator state of {generator_size} bytes")
        numpy_state, python_state = state["numpy"], state["python"]
        if not (isinstance(numpy_state, list) and len(numpy_state) == 5
                and isinstance(numpy_state[1], torch.Tensor) and numpy_state[1].numel() == 624):
            raise _damaged(path, f"{what} (numpy)", "is not a Mersenne Twister state of 624 words")
        if not (isinstance(python_state, list) and len(python_state) == 3
                and isinstance(python_state[1], list) and len(python_state[1]) == 625):
            raise _damaged(path, f"{what} (python)", "is not a Mersenne Twister state of 625 words")


def check_structure(ckpt: Mapping[str, Any], path: Path) -> None:
    """Raise :class:`CheckpointError` naming the first missing or malformed part of ``ckpt`` (read from
    ``path``): every key, its type, the settings, the weights (non-empty, finite), the optimiser state, the
    random states and the metrics history. The template model is parsed where the run needs it."""
    for key, kind in _PARTS.items():
        if key not in ckpt:
            raise _damaged(path, f"the part {key!r}", "is missing")
        if not isinstance(ckpt[key], kind) or (kind is int and isinstance(ckpt[key], bool)):
            raise _damaged(path, f"the part {key!r}",
                           f"is a {type(ckpt[key]).__name__}, not a {kind.__name__}")
    try:
        TrainConfig.from_dict(ckpt["config"])
    except (InvalidInputError, TypeError, ValueError) as exc:
        raise _damaged(path, "the settings (config)", f"are invalid: {exc}") from None
    model = ckpt["model"]
    if not model or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise _damaged(path, "the model weights (state dict)", "are empty or not tensors")
    for name, tensor in model.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise _damaged(path, f"the model weight {name!r}", "holds NaN or infinite values")
    if not {"state", "param_groups"} <= set(ckpt["optimizer"]):
        raise _damaged(path, "the optimiser state", "lacks 'state' or 'param_groups'")
    if not ckpt["template"]:
        raise _damaged(path, "the template model", "is empty")
    if len(ckpt["fingerprint"]) != 5:
        raise _damaged(path, "the data fingerprint", "does not have 5 numbers")
    if ckpt["world_size"] < 1 or ckpt["epoch"] < 1 or ckpt["step"] < 0:
        raise _damaged(path, "the epoch, step or process count", "is out of range")
    history = ckpt["history"]
    if len(history) != ckpt["epoch"] or not all(isinstance(r, dict) and set(METRIC_COLUMNS) <= set(r)
                                                 for r in history):
        raise _damaged(path, "the metrics history", f"does not hold one full row for each of {ckpt['epoch']} "
                                                    "epoch(s)")
    _check_rng(path, ckpt["rng"], ckpt["world_size"])


def restore(ckpt: Mapping[str, Any], path: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
            data_gen: torch.Generator, proj_gen: torch.Generator, rank: int) -> None:
    """Load the weights, optimiser state and random states of ``ckpt`` into this run, or raise
    :class:`CheckpointError` naming the part that does not fit the checkpoint's own template model."""
    expected = net.state_dict()
    saved = ckpt["model"]
    if set(saved) != set(expected) or any(saved[k].shape != expected[k].shape for k in saved):
        missing = sorted(set(expected) - set(saved))[:3]
        raise _damaged(path, "the model weights (state dict)", "do not match its template model"
                       + (f" (missing {', '.join(missing)})" if missing else " (names or shapes differ)"))
    net.load_state_dict(saved)
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise _damaged(path, "the optimiser state", f"does not fit the model ({exc})") from None
    try:
        data_gen.set_state(ckpt["rng"]["data_order"])
        set_rng_state(ckpt["rng"]["ranks"][rank], proj_gen)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise _damaged(path, "the random states",
                       f"cannot be restored ({str(exc).splitlines()[0]})") from None


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
           "rng_state", "set_rng_state", "data_fingerprint", "read_checkpoint", "check_structure", "restore",
           "check_resumable",
           "write_checkpoint", "write_metrics_csv"]
