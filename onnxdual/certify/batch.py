"""One batch of a certification run: for every stage the certified margin bound around its prediction and a
PGD attack on the true label, and the cascade's answer per example (Alg. 2: the first stage that certifies).

A batch depends only on its examples, its eps and its first index (its random streams are seeded by them,
:func:`onnxdual.certify.shards.batch_generator`), so a run can certify its batches in any order, on any
rank, or continue an interrupted run from its saved batches (:mod:`onnxdual.certify.journal`) and get the
same records. The run (:mod:`onnxdual.certify.run`) and its estimate (:mod:`onnxdual.certify.estimate`)
both certify through :func:`certify_batch`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from onnxdual.attack import pgd
from onnxdual.certify.margins import worst_margins
from onnxdual.certify.shards import PGD_STREAM, PROJECTION_STREAM, batch_generator
from onnxdual.engine.input_sets import make_input_set
from onnxdual.engine.network import margin_matrix


@dataclass
class BatchResult:
    """The records of one batch (one per example, and one per example and stage) and its bound time."""

    records: list[dict]
    stage_records: list[dict]
    seconds: float
    #: per record: its clean input and the best PGD point of the stage that answered (not saved)
    points: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    #: what the batch added to the report's thumbnails, as saved by a journal (None: not yet known)
    adversarials: list[dict] | None = None

    @property
    def size(self) -> int:
        return len(self.records)


def certify_batch(nets: list[nn.Module], x: Tensor, y: Tensor, eps: float, eps_index: int, start: int,
                  settings, relaxation: str, num_classes: int,
                  clock: Callable[[], float] = time.perf_counter) -> BatchResult:
    """Certify the examples ``x`` (labels ``y``; indices from ``start``) at the ``eps_index``-th eps
    ``eps`` with every stage of ``nets`` in order; ``settings`` is the run's
    :class:`~onnxdual.certify.run.CertifySettings`. ``seconds`` counts the bounds only (``clock``)."""
    generator = batch_generator(settings.seed, PGD_STREAM, eps_index, start)
    projections = batch_generator(settings.seed, PROJECTION_STREAM, eps_index, start)
    decided: Tensor = torch.zeros_like(y)  # 0 = no stage certified yet
    preds, margins, attacks, points = [], [], [], []
    # the attack's objective and set are the same for every stage: f_y - f_j over the eps-ball
    c = margin_matrix(y, num_classes).to(x.dtype)
    mask = torch.ones_like(c[:, :, 0], dtype=torch.bool)
    mask[torch.arange(y.shape[0]), y] = False
    ball = make_input_set(x, eps, settings.norm, settings.clip)
    out = BatchResult([], [], 0.0)
    for i, net in enumerate(nets, 1):
        t0 = clock()
        pred, margin = worst_margins(net, x, eps, settings.norm, settings.clip, settings.probable,
                                     settings.projections, num_classes, projections, relaxation)
        out.seconds += clock() - t0
        found = pgd(net, ball, c, steps=settings.pgd_steps, restarts=settings.pgd_restarts, mask=mask,
                    generator=generator)
        attack = found.value.detach()
        certified = margin > 0
        decided = torch.where((decided == 0) & certified, torch.full_like(decided, i), decided)
        correct = pred == y
        # a bound around the true label that an attack undercuts is unsound
        violation = correct & (attack < margin - 1e-4 * (1 + margin.abs()))
        for k in range(y.shape[0]):
            out.stage_records.append({
                "index": start + k, "eps": eps, "stage": i, "prediction": int(pred[k]),
                "correct": bool(correct[k]), "certified": bool(certified[k]),
                "robust": bool(certified[k] and correct[k]), "margin_lower_bound": float(margin[k]),
                "pgd_success": bool(attack[k] <= 0), "pgd_margin": float(attack[k]),
                "soundness_violation": bool(violation[k])})
        preds.append(pred)
        margins.append(margin)
        attacks.append(attack)
        points.append(found.x)
    for k in range(y.shape[0]):
        stage_idx = int(decided[k]) - 1 if decided[k] > 0 else 0
        pred = int(preds[stage_idx][k])
        out.records.append({
            "index": start + k, "eps": eps, "label": int(y[k]), "prediction": pred,
            "certified": bool(decided[k] > 0 and pred == int(y[k])),
            "margin_lower_bound": float(margins[stage_idx][k]),
            "stage": int(decided[k]) if decided[k] > 0 else None,
            "pgd_success": bool(attacks[stage_idx][k] <= 0), "pgd_margin": float(attacks[stage_idx][k])})
        out.points.append((x[k], points[stage_idx][k]))
    return out
