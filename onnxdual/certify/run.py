"""Certification runs: a model or a cascade on a labelled data set (the engine behind ``onnxdual certify``).

For every example, eps and stage: the exact dual bound of every margin ``f_p - f_j`` around the stage's own
prediction ``p`` (Alg. 2 certifies a stage's prediction), and a PGD attack on the true label. With
``CertifySettings.probable = delta`` the bound holds with probability at least ``1 - delta`` per example
instead (App. E), and every output says so. A cascade's
answer is the prediction of the first stage that certifies the example; an example no stage certifies is
not robust (Alg. 2). An example whose attack beats its certified bound is a soundness violation; it is
recorded, never hidden.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd
import torch
from torch import Tensor, nn

from onnxdual import defaults
from onnxdual.certify.batch import BatchResult, certify_batch
from onnxdual.certify.estimate import PROBE_EXAMPLES, RunPlan, plan_run
from onnxdual.certify.journal import Journal, run_fingerprint
from onnxdual.certify.manifest import is_manifest_path, read_manifest, stage_files
from onnxdual.certify.margins import worst_margins
from onnxdual.certify.shards import agree, describe_ranks, gather_result, shard_batches
from onnxdual.distributed import DistInfo, dist_info
from onnxdual.engine.autodual import RELAXATIONS
from onnxdual.errors import InvalidInputError
from onnxdual.frontend.onnx_import import load
from onnxdual.reports.meta import RunMeta, dual_layer_sources


@dataclass(frozen=True)
class Stage:
    name: str
    path: Path
    net: nn.Module


@dataclass(frozen=True)
class CertifySettings:
    eps: tuple[float, ...]
    norm: str = defaults.NORM
    #: the data domain of l-inf balls; the same default as ``--clip`` (:mod:`onnxdual.defaults`)
    clip: tuple[float, float] | None = defaults.CLIP
    batch_size: int = defaults.CERTIFY_BATCH_SIZE
    pgd_steps: int = defaults.PGD_STEPS
    pgd_restarts: int = defaults.PGD_RESTARTS
    seed: int = defaults.SEED
    #: ``None``: exact bounds (a proof). A number ``delta``: bounds that hold with probability at least
    #: ``1 - delta`` per example (App. E), from ``projections = (k, m)`` random projections.
    probable: float | None = None
    projections: tuple[int, int] = defaults.PROJECTIONS
    #: the relaxation of exact bounds: "paper", "adaptive", "optimized", or "auto": the tightest whose cost,
    #: measured on the first examples, fits ``time_budget`` seconds per example (:func:`choose_relaxation`)
    relaxation: str = defaults.RELAXATION
    time_budget: float = defaults.TIME_BUDGET

    def __post_init__(self):
        if not self.eps:
            raise InvalidInputError("give at least one eps")
        for e in self.eps:
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e <= 0:
                raise InvalidInputError(f"eps must be a positive number, got {e!r}")
        if self.norm not in ("linf", "l2"):
            raise InvalidInputError(f"norm must be 'linf' or 'l2', got {self.norm!r}")
        if self.batch_size < 1:
            raise InvalidInputError("batch size must be at least 1")
        if self.probable is not None and not 0 < self.probable < 1:
            raise InvalidInputError(f"the failure probability delta must lie in (0, 1), got {self.probable}")
        if self.clip is not None:
            lo, hi = self.clip
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise InvalidInputError(f"the data domain (clip) must be a finite range lo <= hi, "
                                        f"got {self.clip}")
        if len(self.projections) != 2 or min(self.projections) < 1:
            raise InvalidInputError(f"projections must be two positive integers k,m, got {self.projections}")
        if self.relaxation not in ("auto", *RELAXATIONS):
            raise InvalidInputError(f"relaxation must be auto or one of {', '.join(RELAXATIONS)}, "
                                    f"got {self.relaxation!r}")
        if self.probable is not None and self.relaxation not in ("auto", "paper"):
            raise InvalidInputError("a probable bound uses the paper's relaxation (random projections need a "
                                    f"linear dual); drop --probable or use --relaxation paper, not "
                                    f"{self.relaxation!r}")
        if not (isinstance(self.time_budget, (int, float)) and math.isfinite(self.time_budget)
                and self.time_budget > 0):
            raise InvalidInputError(f"the time budget must be a positive number of seconds, got "
                                    f"{self.time_budget!r}")

    @property
    def bound(self) -> str:
        """What kind of bound certifies: ``"exact"``, or ``"probabilistic (delta=..., k=..., m=...)"``."""
        if self.probable is None:
            return "exact"
        k, m = self.projections
        return f"probabilistic (delta={self.probable:g}, k={k}, m={m})"


def load_stages(path: str | Path, *, allow_outside: bool = False) -> list[Stage]:
    """An ONNX file (one stage) or a cascade manifest (:mod:`onnxdual.certify.manifest`, stages in order;
    ``allow_outside`` accepts stage files outside the manifest's folder)."""
    p = Path(path)
    if is_manifest_path(p):
        files = stage_files(read_manifest(p), p, allow_outside=allow_outside)
        return [Stage(f"stage {i}: {f.name}", f, load(f)) for i, f in enumerate(files, 1)]
    return [Stage(p.name, p, load(p))]


@dataclass
class CertifyResult:
    """Per-example records plus timings, and the tables the reports are made of."""

    stages: list[Stage]
    settings: CertifySettings
    records: list[dict] = field(default_factory=list)
    stage_records: list[dict] = field(default_factory=list)
    seconds: dict[float, float] = field(default_factory=dict)
    #: the relaxation the exact bounds used, and why (``auto``: the measured costs)
    relaxation: str = "paper"
    relaxation_choice: str = ""
    #: a run on several ranks (:mod:`onnxdual.certify.shards`): where each ran and its throughput
    ranks: list[dict] = field(default_factory=list)
    #: for the report's thumbnails: up to :data:`SHOWN_ADVERSARIALS` correctly classified, uncertified
    #: examples per (eps, outcome "undecided" / "broken"), with the clean input and PGD's best point
    adversarials: list[dict] = field(default_factory=list)

    @property
    def examples(self) -> pd.DataFrame:
        """One row per example and eps (:meth:`examples_frame`)."""
        return self.examples_frame()

    @property
    def summary(self) -> pd.DataFrame:
        """Certified, PGD and clean accuracy per eps, and per stage of a cascade (:meth:`summary_frame`)."""
        return self.summary_frame()

    @property
    def cascade(self) -> pd.DataFrame | None:
        """Per stage of a cascade: what it certified, alone and cumulatively (``None``: one model)."""
        return self.cascade_frame()

    @property
    def violations(self) -> list[dict]:
        return [r for r in self.stage_records if r["soundness_violation"]]

    def run_meta(self, *, model: str, dataset: str, device: str, started: datetime, seconds: float,
                 command: str | None = None, extra: Mapping[str, Any] | None = None,
                 extra_violations: int = 0) -> RunMeta:
        """The report's record of this run (:class:`~onnxdual.reports.meta.RunMeta`)."""
        s = self.settings
        return RunMeta(model=model, stages=[st.path.name for st in self.stages], dataset=dataset, norm=s.norm,
                       eps=[float(e) for e in s.eps], clip=list(s.clip) if s.clip and s.norm == "linf" else None,
                       bound=s.bound, device=device, started=started.isoformat(timespec="seconds"),
                       seconds=round(seconds, 3), seed=s.seed,
                       soundness_violations=len(self.violations) + extra_violations, command=command,
                       dual_layers=dual_layer_sources(st.net for st in self.stages),
                       extra={"relaxation": self.relaxation, "relaxation_choice": self.relaxation_choice,
                              **({"ranks": describe_ranks(self.ranks)} if self.ranks else {}),
                              **dict(extra or {})})

    def examples_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame.from_records(self.records, columns=[
            "index", "eps", "label", "prediction", "certified", "margin_lower_bound", "stage", "pgd_success",
            "pgd_margin"]).astype({"stage": "Int64"})
        frame["relaxation"] = self.relaxation
        return frame

    def adversarials_frame(self) -> pd.DataFrame:
        """``index, eps, outcome, pgd_margin, input, adversarial`` (numpy arrays of one example's shape)."""
        return pd.DataFrame.from_records(self.adversarials, columns=[
            "index", "eps", "outcome", "pgd_margin", "input", "adversarial"])

    def add_batch(self, batch: BatchResult) -> None:
        """Add a batch's records (in run order); its thumbnails are picked now, or taken as a journal saved
        them (``batch.adversarials``, the same pick)."""
        self.records.extend(batch.records)
        self.stage_records.extend(batch.stage_records)
        if batch.adversarials is None:
            before = len(self.adversarials)
            for record, (x, adversarial) in zip(batch.records, batch.points):
                self.keep_adversarial(record, x, adversarial)
            batch.adversarials = self.adversarials[before:]
        else:
            self.adversarials.extend(batch.adversarials)

    def keep_adversarial(self, record: dict, x: Tensor, adversarial: Tensor) -> None:
        """Keep ``record``'s clean input and PGD point when it is undecided or broken and its kind, at its eps,
        has fewer than :data:`SHOWN_ADVERSARIALS` kept."""
        if record["certified"] or record["prediction"] != record["label"]:
            return
        outcome = "broken" if record["pgd_success"] else "undecided"
        if sum(a["eps"] == record["eps"] and a["outcome"] == outcome for a in self.adversarials) \
                >= SHOWN_ADVERSARIALS:
            return
        self.adversarials.append({"index": record["index"], "eps": record["eps"], "outcome": outcome,
                                  "pgd_margin": record["pgd_margin"], "input": x.detach().cpu().numpy(),
                                  "adversarial": adversarial.detach().cpu().numpy()})

    def summary_frame(self) -> pd.DataFrame:
        ex, st = self.examples_frame(), pd.DataFrame.from_records(self.stage_records)
        rows = []
        for eps in self.settings.eps:
            e = ex[ex.eps == eps]
            n = len(e)
            secs = self.seconds.get(eps, float("nan"))
            rows.append({"eps": eps, "stage": "all", "n": n,
                         "clean_accuracy": (e.prediction == e.label).mean(),
                         "certified_accuracy": e.certified.mean(),
                         "pgd_accuracy": 1 - e.pgd_success.mean(),
                         "examples_per_second": n / secs if secs > 0 else float("nan"), "seconds": secs})
            if len(self.stages) > 1:
                for i in range(1, len(self.stages) + 1):
                    s = st[(st.eps == eps) & (st.stage == i)]
                    rows.append({"eps": eps, "stage": str(i), "n": len(s),
                                 "clean_accuracy": s.correct.mean(), "certified_accuracy": s.robust.mean(),
                                 "pgd_accuracy": 1 - s.pgd_success.mean(),
                                 "examples_per_second": float("nan"), "seconds": float("nan")})
        frame = pd.DataFrame(rows)
        frame["bound"] = self.settings.bound  # a probabilistic run must say so wherever its numbers go
        frame["relaxation"] = self.relaxation
        return frame

    def cascade_frame(self) -> pd.DataFrame | None:
        if len(self.stages) < 2:
            return None
        ex, st = self.examples_frame(), pd.DataFrame.from_records(self.stage_records)
        rows = []
        for eps in self.settings.eps:
            e = ex[ex.eps == eps]
            cumulative = 0
            for i, stage in enumerate(self.stages, 1):
                s = st[(st.eps == eps) & (st.stage == i)]
                by_stage = int(((e.stage == i) & e.certified).sum())
                cumulative += by_stage
                rows.append({"eps": eps, "stage": i, "model": stage.path.name, "certified_by_stage": by_stage,
                             "cumulative_certified": cumulative,
                             "cumulative_certified_accuracy": cumulative / max(len(e), 1),
                             "standard_accuracy_stage_alone": s.correct.mean(),
                             "robust_accuracy_stage_alone": s.robust.mean()})
        return pd.DataFrame(rows)


def check_domain(x: Tensor, clip: tuple[float, float] | None) -> None:
    """Every clean input must lie in the data domain ``clip`` its l-inf balls are intersected with (``None``:
    no domain): a bound over the ball around a clamped copy would certify an input the data does not hold.
    Raises :class:`InvalidInputError` naming the first offending example."""
    if clip is None or x.numel() == 0:
        return
    lo, hi = clip
    flat = x.detach().flatten(1)
    outside = (flat < lo) | (flat > hi) | torch.isnan(flat)
    rows = outside.any(1).nonzero()
    if rows.numel():
        i = int(rows[0, 0])
        value = float(flat[i][outside[i]][0])
        n_bad = int(outside.any(1).sum())
        raise InvalidInputError(f"example {i} lies outside the data domain [{lo:g}, {hi:g}] (--clip): it "
                                f"holds the value {value:g} ({n_bad} of {x.shape[0]} examples do); "
                                "give the data's own range with --clip, or --clip none")


#: undecided (and, apart, broken) examples per eps whose PGD adversarial a result keeps for the report
SHOWN_ADVERSARIALS = 12


def choose_relaxation(net: nn.Module, x: Tensor, settings: CertifySettings, num_classes: int,
                      clock: Callable[[], float] = time.perf_counter) -> tuple[str, str]:
    """The relaxation of this run and why. Fixed in the settings: that one. ``auto``: the tightest of
    optimized, adaptive, paper whose cost per example, measured on the first :data:`PROBE_EXAMPLES`
    examples at the largest eps (the costliest, most unstable units), fits ``settings.time_budget``; a
    probable bound always uses the paper's. The measured costs are part of the answer, so a report says why.
    """
    if settings.probable is not None:
        return "paper", "probable bounds use the paper's relaxation"
    if settings.relaxation != "auto":
        return settings.relaxation, "chosen (--relaxation)"
    probe = x[:PROBE_EXAMPLES]
    eps, budget = max(settings.eps), settings.time_budget
    costs: dict[str, float] = {}
    for mode in ("adaptive", "optimized"):
        t0 = clock()
        worst_margins(net, probe, eps, settings.norm, settings.clip, num_classes=num_classes, relaxation=mode)
        costs[mode] = (clock() - t0) / probe.shape[0]
        if costs[mode] > budget:
            break
    measured = ", ".join(f"{m} {s:.3g} s" for m, s in costs.items())
    fitting = [m for m in ("optimized", "adaptive") if costs.get(m, math.inf) <= budget]
    chosen = fitting[0] if fitting else "paper"
    return chosen, f"auto: tightest within {budget:g} s per example (measured per example: {measured})"


def check_inputs(stages: list[Stage], x: Tensor, y: Tensor, settings: CertifySettings) -> int:
    """The number of classes, once the data fits every stage, the labels fit the model and the inputs
    lie in the data domain; raises :class:`InvalidInputError` otherwise."""
    if x.shape[0] != y.shape[0]:
        raise InvalidInputError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
    with torch.no_grad():
        try:
            num_classes = stages[0].net(x[:1]).flatten(1).shape[1]
        except Exception as exc:
            raise InvalidInputError(f"data of shape {tuple(x.shape[1:])} does not fit the model "
                                    f"{stages[0].path.name}: {str(exc).splitlines()[0]}") from exc
        for stage in stages[1:]:
            try:
                n_out = stage.net(x[:1]).flatten(1).shape[1]
            except Exception as exc:
                raise InvalidInputError(f"data does not fit {stage.path.name}: {exc}") from exc
            if n_out != num_classes:
                raise InvalidInputError("all cascade stages must have the same number of outputs")
    if (y < 0).any() or (y >= num_classes).any():
        raise InvalidInputError(f"labels must lie in [0, {num_classes - 1}] for a model with {num_classes} "
                                f"outputs; found {int(y.min())}..{int(y.max())}")
    check_domain(x, settings.clip if settings.norm == "linf" else None)
    return num_classes


def certify(stages: list[Stage], x: Tensor, y: Tensor, settings: CertifySettings,
            progress: Callable[[int], None] | None = None, world: DistInfo | None = None, *,
            journal: Journal | None = None,
            on_plan: Callable[[RunPlan], None] | None = None) -> CertifyResult:
    """Certify every example of ``(x, y)`` at every eps; ``progress(n)`` is called after each batch. In a
    process group (``world``, default: the initialised one) each rank certifies its shard of the batches and
    every rank returns the whole run's result, equal to a one-process run's (:mod:`onnxdual.certify.shards`).

    With a ``journal`` (:class:`~onnxdual.certify.journal.Journal`) every finished batch is saved as the run
    goes, and the batches an interrupted run of the same problem saved are taken from it instead of being
    certified again: a batch's records depend only on its examples, eps and first index
    (:mod:`onnxdual.certify.batch`), so the continued run's result equals an uninterrupted one's.
    ``on_plan(plan)`` is called once before the first batch is certified, with the estimate of what is left
    (:func:`onnxdual.certify.estimate.plan_run`).
    """
    world = dist_info() if world is None else world
    t_run = time.perf_counter()
    num_classes = check_inputs(stages, x, y, settings)
    result = CertifyResult(stages, settings)
    nets = [stage.net for stage in stages]
    saved = journal.open(run_fingerprint(nets, x, y, settings, world.world_size)) if journal else None
    result.relaxation, result.relaxation_choice = saved or agree(
        lambda: choose_relaxation(stages[0].net, x, settings, num_classes), world)
    if journal is not None:
        journal.start(result.relaxation, result.relaxation_choice)
    batches = [(i, eps, start) for i, eps in enumerate(settings.eps)
               for start in shard_batches(x.shape[0], settings.batch_size, world)]
    if on_plan is not None:
        todo = [start for i, _, start in batches if journal is None or not journal.has(i, start)]
        pairs = sum(min(settings.batch_size, x.shape[0] - start) for start in todo)
        on_plan(plan_run(nets, x, y, settings, result.relaxation, num_classes, pairs, len(todo)))
    result.seconds = {eps: 0.0 for eps in settings.eps}
    for eps_index, eps, start in batches:
        batch = journal.saved(eps_index, start) if journal is not None else None
        if batch is None:
            rows = slice(start, start + settings.batch_size)
            batch = certify_batch(nets, x[rows], y[rows], eps, eps_index, start, settings, result.relaxation,
                                  num_classes)
            result.add_batch(batch)
            if journal is not None:
                journal.save(eps_index, start, batch)
        else:
            result.add_batch(batch)
        result.seconds[eps] += batch.seconds
        if progress is not None:
            progress(batch.size)
    return gather_result(result, world, time.perf_counter() - t_run, str(x.device), keep=SHOWN_ADVERSARIALS)
