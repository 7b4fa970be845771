"""Robust cascades (Wong et al. 2018, §3.3 and Alg. 2 in App. C).

Stage ``i + 1`` is trained only on the training examples that no earlier stage certifies: after stage ``i``
is trained, every example still in the training set is certified around stage ``i``'s own prediction
(``J(x, g(e_{f(x)} - e_{y^targ})) > 0`` for all ``y^targ != f(x)``, Alg. 2) and the certified ones are
removed -- whether or not the prediction is correct, exactly as in Alg. 2. At test time a cascade answers
with the first stage that certifies its prediction (:func:`onnxdual.certify.certify`).

The default test is the exact dual bound of the one margin certifier that ``onnxdual certify`` uses too
(:func:`onnxdual.certify.margins.certified_predictions`), computed in batches. For large training sets a
cheaper test may be passed as ``certifier`` (e.g. a random-projection estimate, §3.2): which examples a
later stage trains on only shapes training, never a certificate, because the cascade is certified with
exact bounds at test time. Only the *number* of examples filtered changes.

Layout of ``out_dir``::

    cascade.json              manifest (format "onnxdual-cascade"), rewritten after every stage
    stage1.onnx ... stageK.onnx
    stage1/ ...               each stage's training run (checkpoint.pt, metrics.csv, model.onnx) and
                              train_indices.npy (indices into the training set it trained on) and
                              certified.npy (which of those it certifies)

``cascade.json`` lists the finished stages, so it is a valid cascade for
:func:`onnxdual.certify.load_stages` at any time; ``complete`` says whether the run is over, and
``stopped_early`` whether it ended before K stages because a stage certified every remaining example.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from onnxdual.certify.manifest import CASCADE_FORMAT, MANIFEST, MANIFEST_VERSION, write_manifest
from onnxdual.certify.margins import certified_predictions
from onnxdual.distributed import DistInfo, barrier, dist_info, resolve_device
from onnxdual.errors import InvalidInputError
from onnxdual.files import atomic_write, clean_stale_temps, lock_dir, prepare_dir
from onnxdual.reports.meta import software_versions
from onnxdual.training.checkpoint import CHECKPOINT, MODEL
from onnxdual.training.config import TrainConfig, changed_settings
from onnxdual.training.distributed import run_sharded
from onnxdual.training.interfaces import ArrayData, TrainCallback, TrainData
from onnxdual.training.loop import train
from onnxdual.training.source import ModelSource, manifest_source

#: ``certifier(net, x) -> bool tensor``: which examples of ``x`` the stage ``net`` certifies
Certifier = Callable[[nn.Module, Tensor], Tensor]


class CascadeCallback(TrainCallback):
    """:class:`TrainCallback` plus stage hooks."""

    def on_stage_start(self, stage: int, stages: int, n_examples: int) -> None:
        """Stage ``stage`` (1-based) of ``stages`` starts training on ``n_examples`` examples."""

    def on_stage_end(self, stage: int, info: Mapping[str, Any]) -> None:
        """Stage ``stage`` is trained and filtered; ``info`` is its manifest entry."""


@dataclass
class CascadeResult:
    """What :func:`train_cascade` produced."""

    out_dir: Path
    manifest_path: Path
    manifest: dict[str, Any]
    stage_paths: list[Path] = field(default_factory=list)

    @property
    def stopped_early(self) -> bool:
        return bool(self.manifest["stopped_early"])


def exact_certifier(eps: float, norm: str = "linf", clip: tuple[float, float] | None = None,
                    batch_size: int = 200) -> Certifier:
    """Alg. 2's test with exact dual bounds: ``J(x, g(e_{f(x)} - e_j)) > 0`` for every ``j != f(x)``,
    i.e. the stage's own prediction is certified (sound lower bounds, Theorem 1)."""

    def certifier(net: nn.Module, x: Tensor) -> Tensor:
        return certified_predictions(net, x, eps, norm, clip, batch_size)

    return certifier


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write(path, buf.getvalue())


def _subset(data: TrainData, index: np.ndarray) -> ArrayData:
    idx = torch.from_numpy(index.astype(np.int64))
    return ArrayData(data.x[idx], data.y[idx], getattr(data, "name", "train"), int(data.num_classes))


def train_cascade(stages: int, model_source: ModelSource | None, train_data: TrainData,
                  config: TrainConfig, out_dir: str | os.PathLike[str], *, resume: bool = False,
                  callbacks: Sequence[TrainCallback] = (), certifier: Certifier | None = None,
                  certify_batch_size: int = 200) -> CascadeResult:
    """Train a cascade of up to ``stages`` networks (Alg. 2) and write its manifest.

    Every stage trains a fresh copy of ``model_source`` with ``config`` (stage ``i`` uses seed
    ``config.seed + i - 1``, so built-in architectures start from different initialisations) on the
    examples no earlier stage certifies. Stops early, and says so in the manifest, when a stage certifies
    every example it trained on.

    Args:
        certifier: which examples a trained stage certifies; default :func:`exact_certifier` with
            ``config``'s eps, norm and clip in batches of ``certify_batch_size``. A cheaper test is fine
            for large sets (the filter shapes training only; certification at test time stays exact).
        resume: continue an interrupted cascade in ``out_dir`` (finished stages are kept, the stage in
            progress resumes from its checkpoint); ``model_source`` may then be ``None`` (the manifest
            names it).
    """
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise InvalidInputError(f"a cascade needs at least one stage, got {stages!r}")
    world = dist_info()
    out = prepare_dir(out_dir)
    # rank 0 holds the cascade directory's lock (each stage's run directory has its own, see loop.train)
    with lock_dir(out, "cascade directory") if world.main else nullcontext():
        if world.main:
            clean_stale_temps(out)
        return _train_cascade_in(stages, model_source, train_data, config, out, world, resume, callbacks,
                                 certifier, certify_batch_size)


def _train_cascade_in(stages: int, model_source: ModelSource | None, train_data: TrainData,
                      config: TrainConfig, out: Path, world: DistInfo, resume: bool,
                      callbacks: Sequence[TrainCallback], certifier: Certifier | None,
                      certify_batch_size: int) -> CascadeResult:
    """:func:`train_cascade` in the prepared (and, on rank 0, locked) directory ``out``."""
    manifest_path = out / MANIFEST
    test = certifier or exact_certifier(config.eps, config.norm, config.effective_clip, certify_batch_size)
    n = int(train_data.x.shape[0])
    if n == 0:
        raise InvalidInputError("the training set is empty")
    done: list[dict[str, Any]] = []
    if resume:
        if not manifest_path.exists() and not (out / "stage1").exists():
            raise InvalidInputError(f"nothing to resume: {manifest_path} does not exist")
        if manifest_path.exists():
            try:
                previous = json.loads(manifest_path.read_text())
            except (OSError, ValueError) as exc:
                raise InvalidInputError(f"cannot read {manifest_path}: {exc}") from exc
            if previous.get("format") != CASCADE_FORMAT or previous.get("config") is None:
                raise InvalidInputError(f"{manifest_path} is not a cascade written by onnxdual train")
            changed = changed_settings(TrainConfig.from_dict(previous["config"]), config)
            if changed:
                raise InvalidInputError(f"cannot resume {out}: the cascade used different settings "
                                        f"({', '.join(changed)})")
            if previous.get("training_examples") != n:
                raise InvalidInputError(f"cannot resume {out}: it was trained on "
                                        f"{previous.get('training_examples')} examples, not {n}")
            done = list(previous["stages"])
            if model_source is None:
                model_source = previous["model"]
            if previous.get("complete"):
                return CascadeResult(out, manifest_path, previous, [out / s["onnx"] for s in done])
    elif manifest_path.exists() or (out / "stage1").exists():
        raise InvalidInputError(f"{out} already holds a cascade ({MANIFEST}); resume it or choose another "
                                "output directory")
    if model_source is None:
        hint = f": give the model or architecture {out} was started with" if resume else ""
        raise InvalidInputError("no model given to train" + hint)
    if world.active:
        barrier()  # every rank has checked the output directory before rank 0 writes into it

    remaining = np.arange(n, dtype=np.int64)
    for entry in done:
        trained = np.load(out / entry["train_indices"])
        certified = np.load(out / entry["certified"])
        remaining = trained[~certified]
    settings = config.to_dict()
    manifest: dict[str, Any] = {
        "format": CASCADE_FORMAT, "version": MANIFEST_VERSION, "stages": done,
        "eps": config.eps, "norm": config.norm, "clip": list(config.effective_clip or []) or None,
        "normalization": settings["normalize"],  # {"mean": [...], "std": [...]} or None
        "requested_stages": stages, "training_examples": n, "complete": False, "stopped_early": False,
        "stop_reason": None, "model": manifest_source(model_source), "config": settings,
        "versions": software_versions(),
    }
    device = resolve_device(config.device)
    for i in range(len(done) + 1, stages + 1):
        stage_dir = out / f"stage{i}"
        index_path = stage_dir / "train_indices.npy"
        in_progress = (stage_dir / CHECKPOINT).exists()
        if resume and in_progress:
            if not index_path.exists() or not np.array_equal(np.load(index_path), remaining):
                raise InvalidInputError(f"cannot resume {stage_dir}: its training examples do not match")
        elif world.main:
            prepare_dir(stage_dir)
            _save_npy(index_path, remaining)
        for cb in callbacks:
            if isinstance(cb, CascadeCallback):
                cb.on_stage_start(i, stages, int(remaining.size))
        stage_config = replace(config, seed=config.seed + i - 1)
        run = train(model_source, _subset(train_data, remaining), stage_config, stage_dir,
                    resume=resume and in_progress, callbacks=callbacks)
        # Alg. 2: remove the examples this stage certifies from the training set of the next stages
        x_rem = train_data.x[torch.from_numpy(remaining)].to(device, torch.float32)
        certified = run_sharded(lambda x: test(run.net, x), x_rem).numpy()  # ranks share the work
        entry = {"onnx": f"stage{i}.onnx", "run": stage_dir.name, "trained_on": int(remaining.size),
                 "certified_train": int(certified.sum()), "seed": stage_config.seed,
                 "train_indices": f"{stage_dir.name}/train_indices.npy",
                 "certified": f"{stage_dir.name}/certified.npy",
                 "final_metrics": run.history[-1] if run.history else None}
        if world.main:
            _save_npy(stage_dir / "certified.npy", certified)
            atomic_write(out / entry["onnx"], (stage_dir / MODEL).read_bytes())
        remaining = remaining[~certified]
        manifest["stages"].append(entry)
        if remaining.size == 0 and i < stages:
            manifest["stopped_early"] = True
            manifest["stop_reason"] = (f"stage {i} certified every remaining training example; "
                                       f"{stages - i} further stage(s) not trained")
        manifest["complete"] = remaining.size == 0 or i == stages
        manifest["remaining_uncertified"] = int(remaining.size)
        if world.main:
            write_manifest(out, manifest)
        if world.active:
            barrier()
        for cb in callbacks:
            if isinstance(cb, CascadeCallback):
                cb.on_stage_end(i, entry)
        if remaining.size == 0:
            break
    if not manifest["complete"]:  # resumed with every stage already done
        manifest["complete"] = True
        if world.main:
            write_manifest(out, manifest)
    return CascadeResult(out, manifest_path, manifest, [out / s["onnx"] for s in manifest["stages"]])


__all__ = ["train_cascade", "CascadeResult", "CascadeCallback", "exact_certifier", "Certifier"]
