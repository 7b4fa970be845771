"""Evaluation of a trained model or cascade on a test set: exact certification and a PGD attack
(:func:`onnxdual.certify.certify`), the certification report, and the soundness check that the certified
error is never below the attack's error (a certificate an attack beats would be a bug in the bounds).

The certifier, the report writer and pandas are imported when :func:`evaluate` runs, so importing
:mod:`onnxdual.training` (every ``onnxdual train``, every ``torchrun`` rank, ``--no-eval``) does not pay
for them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from onnxdual.distributed import resolve_device
from onnxdual.training.interfaces import TrainData

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from onnxdual.certify import CertifyResult


class SoundnessError(RuntimeError):
    """A certified bound was beaten by an attack: a bug in the bounds, never a user error."""


@dataclass
class EvalResult:
    """Exact certification and PGD of a trained model (or cascade) on a test set."""

    result: CertifyResult
    summary: pd.DataFrame
    #: the report's files (a :class:`onnxdual.files.WrittenFiles`, whose ``replaced`` says whether a
    #: previous report was replaced); empty without a report directory
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def overall(self) -> dict[str, float]:
        """The ``stage == "all"`` row of the summary for the first eps."""
        row = self.summary[self.summary.stage == "all"].iloc[0]
        keys = ("eps", "n", "clean_accuracy", "certified_accuracy", "pgd_accuracy")
        return {k: float(row[k]) for k in keys}


def evaluate(model_path: str | os.PathLike[str], test_data: TrainData, *, eps: float, norm: str = "linf",
             clip: tuple[float, float] | None = (0.0, 1.0), batch_size: int = 100, pgd_steps: int = 40,
             seed: int = 0, device: str = "cpu", report_dir: str | os.PathLike[str] | None = None,
             meta: Mapping[str, Any] | None = None,
             progress: Callable[[int], None] | None = None) -> EvalResult:
    """Certify ``model_path`` (an ONNX file or a cascade manifest) on ``test_data`` with exact bounds and
    attack it with PGD (:func:`onnxdual.certify.certify`); write the report to ``report_dir``.

    ``meta`` adds facts to the report's metadata (``command`` becomes the report's command line, anything
    else is shown with the run's other details).

    Raises :class:`SoundnessError` -- after writing the report -- when a certified example is broken by the
    attack, i.e. when the certified (robust) error lies below the PGD error: the bound would be wrong.
    """
    from onnxdual.certify import CertifySettings, certify, load_stages
    from onnxdual.reports import write_certify_report

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    dev = resolve_device(device)
    stages = load_stages(model_path)
    for stage in stages:
        stage.net.to(dev)
    settings = CertifySettings(eps=(float(eps),), norm=norm, clip=clip if norm == "linf" else None,
                               batch_size=batch_size, pgd_steps=pgd_steps, seed=seed)
    result = certify(stages, test_data.x.to(dev, torch.float32), test_data.y.to(dev, torch.int64), settings,
                     progress)
    summary = result.summary_frame()
    paths: dict[str, Path] = {}
    examples = result.examples_frame()
    broken = examples[examples.certified & examples.pgd_success]
    overall = summary[summary.stage == "all"]
    if report_dir is not None:
        extra = {"pgd_steps": pgd_steps, **dict(meta or {})}
        command = extra.pop("command", None)
        dataset = f"{getattr(test_data, 'name', 'test')} ({test_data.x.shape[0]} examples)"
        run_meta = result.run_meta(model=str(model_path), dataset=dataset, device=str(dev), started=started,
                                   seconds=time.perf_counter() - t0, command=command, extra=extra,
                                   extra_violations=len(broken))
        paths = write_certify_report(Path(report_dir), examples, summary, run_meta.to_dict(),
                                     result.cascade_frame(), adversarials=result.adversarials_frame())
    if result.violations or len(broken) or \
            (overall.certified_accuracy > overall.pgd_accuracy + 1e-12).any():
        first = result.violations[0]["index"] if result.violations else \
            (int(broken.iloc[0]["index"]) if len(broken) else "?")
        raise SoundnessError(f"soundness violation: robust error below PGD error on {model_path} "
                             f"({len(result.violations) + len(broken)} certified example(s) broken by the "
                             f"attack, first: example {first}); please report this bug")
    return EvalResult(result, summary, paths)


__all__ = ["SoundnessError", "EvalResult", "evaluate"]
