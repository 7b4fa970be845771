"""What a report says about the run that made it: a typed record (:class:`RunMeta`) built by certify and by
training's evaluation alike, and the software versions it records."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any


def software_versions() -> dict[str, str]:
    """Versions of the packages a result depends on (recorded in reports and manifests)."""
    import torch

    import onnxdual

    versions = {"onnxdual": onnxdual.__version__, "torch": torch.__version__}
    for package in ("onnx", "onnx2torch", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:  # pragma: no cover
            versions[package] = "?"
    versions["python"] = platform.python_version()
    return versions


@dataclass(frozen=True)
class RunMeta:
    """The run behind a certification report (the ``meta`` of ``summary.json`` and the page's details)."""

    model: str
    stages: list[str]
    dataset: str
    norm: str
    eps: list[float]
    clip: list[float] | None
    bound: str
    device: str
    started: str
    seconds: float
    seed: int
    soundness_violations: int
    command: str | None = None
    versions: dict[str, str] = field(default_factory=software_versions)
    #: further facts shown in the page's "other details" table (e.g. ``pgd_steps``, training settings)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping the renderers read (``command`` first when there is one)."""
        out: dict[str, Any] = {} if self.command is None else {"command": self.command}
        out.update(model=self.model, stages=list(self.stages), dataset=self.dataset, norm=self.norm,
                   eps=list(self.eps), clip=self.clip, bound=self.bound, device=self.device,
                   versions=dict(self.versions), started=self.started, seconds=self.seconds, seed=self.seed)
        out.update(self.extra)
        out["soundness_violations"] = self.soundness_violations
        return out
