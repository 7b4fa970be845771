"""What a report says about the run that made it: a typed record (:class:`RunMeta`) built by certify and by
training's evaluation alike, the software versions it records, and which distributions (onnxdual itself or
a plugin) supplied the dual layers of the networks it bounded."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any


def software_versions() -> dict[str, str]:
    """Versions of the packages a result depends on (recorded in reports and manifests)."""
    import torch

    # from the metadata, not onnxdual.__version__: the package imports the certify run, which imports this
    versions = {"onnxdual": package_version("onnxdual"), "torch": torch.__version__}
    for package in ("onnx", "onnx2torch", "onnxruntime"):
        versions[package] = package_version(package)
    versions["python"] = platform.python_version()
    return versions


def package_version(distribution: str) -> str:
    """The installed version of ``distribution`` from its metadata (a module's ``__version__`` may be absent,
    as onnx2torch's is), or ``"not installed"``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def dual_layer_sources(nets: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Which distribution supplied the dual layer of each ONNX operator of ``nets`` (modules from
    :func:`onnxdual.load`): ``{distribution: {"version": ..., "operators": [...], "builtin": bool}}``, the
    built-in layers (``onnxdual``) first. Looked up in the registry each network was loaded with, as the dual
    network is built; a node no layer matches (a constant one, folded away) is left out."""
    from onnxdual import registry as registries

    found: dict[str, dict[str, Any]] = {}
    for net in nets:
        table = getattr(net, "onnxdual_registry", None) or registries.default()
        for info in (getattr(net, "onnxdual_nodes", None) or {}).values():
            entry = table.lookup(info.op_type, info.domain, info.since_version)
            if entry is None:
                continue
            source = found.setdefault(entry.distribution, {"version": entry.version, "operators": [],
                                                           "builtin": entry.builtin})
            name = f"{info.domain}::{info.op_type}" if info.domain else info.op_type
            if name not in source["operators"]:
                source["operators"].append(name)
    return dict(sorted(found.items(), key=lambda item: (not item[1]["builtin"], item[0])))


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
    #: the distributions whose dual layers bounded the networks (:func:`dual_layer_sources`)
    dual_layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: further facts shown in the page's "other details" table (e.g. ``pgd_steps``, training settings)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping the renderers read (``command`` first when there is one)."""
        out: dict[str, Any] = {} if self.command is None else {"command": self.command}
        out.update(model=self.model, stages=list(self.stages), dataset=self.dataset, norm=self.norm,
                   eps=list(self.eps), clip=self.clip, bound=self.bound, device=self.device,
                   versions=dict(self.versions), dual_layers=dict(self.dual_layers), started=self.started,
                   seconds=self.seconds, seed=self.seed)
        out.update(self.extra)
        out["soundness_violations"] = self.soundness_violations
        return out
