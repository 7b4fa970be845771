"""``onnxdual.certify(model, x, y, eps, ...)``: certification from Python in one call, for a model given as an
ONNX file, a cascade manifest, a network from :func:`onnxdual.load`, a plain torch module, or a list of those
(a cascade, Alg. 2); the same run as ``onnxdual certify`` (:func:`onnxdual.certify.run.certify`) with the
same defaults (:mod:`onnxdual.defaults`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from onnxdual import defaults
from onnxdual.certify.estimate import RunPlan
from onnxdual.certify.journal import Journal
from onnxdual.certify.run import CertifyResult, CertifySettings, Stage, certify, load_stages
from onnxdual.errors import InvalidInputError
from onnxdual.frontend.export import as_network, is_loaded

ModelLike = str | os.PathLike[str] | nn.Module


def _stages(model: ModelLike | Sequence[ModelLike], x: Tensor) -> list[Stage]:
    parts = list(model) if isinstance(model, (list, tuple)) else [model]
    if not parts:
        raise InvalidInputError("give a model: an ONNX file, a cascade manifest, or a torch module")
    stages: list[Stage] = []
    for part in parts:
        if isinstance(part, (str, os.PathLike)):
            found = load_stages(part)
        elif isinstance(part, nn.Module):
            kind = "network" if is_loaded(part) else "torch module"
            found = [Stage(type(part).__name__, Path(f"{type(part).__name__} ({kind})"), as_network(part, x))]
        else:
            raise InvalidInputError(f"a model is an ONNX file, a cascade manifest or a torch module, not "
                                    f"{type(part).__name__}")
        stages.extend(found)
    if len(stages) > 1:
        stages = [Stage(f"stage {i}: {s.path.name}", s.path, s.net) for i, s in enumerate(stages, 1)]
    for stage in stages:
        stage.net.to(x.device)
    return stages


def _tensor(value: Any, what: str, dtype: torch.dtype) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(dtype)
    try:
        return torch.as_tensor(np.asarray(value), dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be a tensor or an array: {exc}") from None


def certify_model(model: ModelLike | Sequence[ModelLike], x: Any, y: Any,
                  eps: float | Sequence[float] = defaults.EPS, *, norm: str = defaults.NORM,
                  clip: tuple[float, float] | None = defaults.CLIP,
                  batch_size: int = defaults.CERTIFY_BATCH_SIZE, pgd_steps: int = defaults.PGD_STEPS,
                  pgd_restarts: int = defaults.PGD_RESTARTS, seed: int = defaults.SEED,
                  probable: float | None = None, projections: tuple[int, int] = defaults.PROJECTIONS,
                  relaxation: str = defaults.RELAXATION, time_budget: float = defaults.TIME_BUDGET,
                  progress: Callable[[int], None] | None = None,
                  progress_file: str | os.PathLike[str] | None = None,
                  on_plan: Callable[[RunPlan], None] | None = None) -> CertifyResult:
    """Certify ``model`` on inputs ``x`` (``(N, *input_shape)``, on the device to compute on) with labels
    ``y`` at every ``eps``; the same run, options and defaults as ``onnxdual certify``.

    Args:
        model: an ONNX file, a cascade manifest (``.json``), a network from :func:`onnxdual.load`, a torch
            module (exported to ONNX for inputs shaped like ``x`` and loaded back; bounded as in eval mode),
            or a list of these: a cascade whose stages certify in order (Alg. 2).
        x, y: the examples (tensors or arrays; ``x`` as float32, ``y`` as class indices).
        eps: a radius or several.
        norm, clip, batch_size, pgd_steps, pgd_restarts, seed, probable, projections, relaxation,
            time_budget: as :class:`~onnxdual.certify.run.CertifySettings` (``clip=None``: no data domain).
        progress: called with the number of examples after each batch.
        progress_file: a file every finished batch is saved to as the run goes; a call with a file an
            interrupted call of the same problem saved continues it (the result equals an uninterrupted
            run's, value for value); the file is kept, and a finished file makes the same call return at
            once. A file of a different problem is an :class:`InvalidInputError`.
        on_plan: called once before the first batch with the run's estimate
            (:func:`onnxdual.certify.estimate.plan_run`: time, exact-pass memory, probable vs exact).

    Returns:
        a :class:`~onnxdual.certify.run.CertifyResult`: ``.examples`` (one row per example and eps),
        ``.summary`` (certified, PGD and clean accuracy per eps) and ``.cascade`` (per stage, or ``None``)
        are pandas DataFrames; ``.violations`` lists certified bounds an attack beat (a bug, never hidden).
    """
    xt = _tensor(x, "x", torch.float32)
    yt = _tensor(y, "y", torch.long).to(xt.device)
    if xt.dim() < 2:
        raise InvalidInputError("x must have shape (examples, *input_shape)")
    eps_list = tuple(float(e) for e in eps) if isinstance(eps, (list, tuple)) else (eps,)
    settings = CertifySettings(eps=eps_list, norm=norm, clip=clip if norm == "linf" else None,
                               batch_size=batch_size, pgd_steps=pgd_steps, pgd_restarts=pgd_restarts,
                               seed=seed, probable=probable, projections=tuple(projections),
                               relaxation=relaxation, time_budget=time_budget)
    stages = _stages(model, xt)
    if progress_file is None:
        return certify(stages, xt, yt, settings, progress, on_plan=on_plan)
    with Journal(progress_file, resume=True) as journal:
        return certify(stages, xt, yt, settings, progress, journal=journal, on_plan=on_plan)


__all__ = ["certify_model"]
