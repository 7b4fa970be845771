"""The dual-layer registry: ONNX operator -> dual-layer factory, filled from the entry-point group
``onnxdual.duals``.

onnxdual's own dual layers are declared in its ``pyproject.toml`` exactly like a third-party plugin's, so
there is one code path. Two phases: *finding* reads only package metadata (fast; enough for
``onnxdual ops`` and for the "missing operators" check); *loading* imports a factory on first use.

Entry-point names are ONNX operator types (``Relu``), or ``domain::OpType`` for a custom domain.
Precedence: a plugin from another distribution overrides onnxdual's built-in for the same operator.
Two plugins claiming the same operator is an error unless ``ONNXDUAL_PLUGINS`` (a comma-separated
allow-list of distribution names) selects one; the variable also makes runs reproducible by ignoring
every other installed plugin.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, NamedTuple

from onnxdual.errors import PluginLoadError

GROUP = "onnxdual.duals"
BUILTIN_DISTRIBUTION = "onnxdual"
ALLOW_LIST_ENV = "ONNXDUAL_PLUGINS"


class OpKey(NamedTuple):
    domain: str
    op_type: str

    @classmethod
    def parse(cls, entry_name: str) -> "OpKey":
        domain, sep, op_type = entry_name.rpartition("::")
        return cls(domain if sep else "", op_type)

    def __str__(self) -> str:
        return f"{self.domain}::{self.op_type}" if self.domain else self.op_type


@dataclass(frozen=True)
class DualEntry:
    """A found (not yet imported) dual-layer factory."""

    key: OpKey
    target: str  # "module:attribute"
    distribution: str
    version: str
    entry_point: metadata.EntryPoint

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION

    def load(self) -> Callable:
        return _load(self)


def _allowed() -> set[str] | None:
    raw = os.environ.get(ALLOW_LIST_ENV)
    if raw is None:
        return None
    return {name.strip().lower() for name in raw.split(",") if name.strip()} | {BUILTIN_DISTRIBUTION}


@functools.lru_cache(maxsize=None)
def _find_cached(allowed: frozenset[str] | None) -> dict[OpKey, DualEntry]:
    found: dict[OpKey, list[DualEntry]] = {}
    seen: set[tuple[str, str, str]] = set()
    for dist in metadata.distributions():
        eps = [ep for ep in dist.entry_points if ep.group == GROUP]
        if not eps:
            continue
        name = dist.metadata["Name"] or "?"
        if allowed is not None and name.lower() not in allowed:
            continue
        for ep in eps:
            marker = (name.lower(), ep.name, ep.value)
            if marker in seen:  # the same distribution twice on sys.path
                continue
            seen.add(marker)
            key = OpKey.parse(ep.name)
            found.setdefault(key, []).append(DualEntry(key, ep.value, name, dist.version, ep))
    table: dict[OpKey, DualEntry] = {}
    for key, entries in found.items():
        external = [e for e in entries if not e.builtin]
        if len(external) > 1:
            names = ", ".join(sorted(f"{e.distribution} ({e.target})" for e in external))
            raise PluginLoadError(f"several plugins provide a dual layer for {key}: {names}; "
                                  f"choose one with {ALLOW_LIST_ENV}=<distribution>")
        table[key] = external[0] if external else entries[0]
    return table


def find_duals() -> dict[OpKey, DualEntry]:
    """All registered dual layers after precedence, keyed by operator (metadata only, nothing imported)."""
    allowed = _allowed()
    return _find_cached(frozenset(allowed) if allowed is not None else None)


def lookup(op_type: str, domain: str = "") -> DualEntry | None:
    """The entry for an operator, or None. The default domain is also reachable as ``ai.onnx``."""
    if domain == "ai.onnx":
        domain = ""
    return find_duals().get(OpKey(domain, op_type))


def refresh() -> None:
    """Forget cached metadata and factories (after installing a plugin in a running process)."""
    _find_cached.cache_clear()
    _load.cache_clear()


@functools.lru_cache(maxsize=None)
def _load(entry: DualEntry) -> Callable:
    try:
        factory = entry.entry_point.load()
    except Exception as exc:
        raise PluginLoadError(f"dual layer for {entry.key} from {entry.distribution} ({entry.target}) "
                              f"failed to import: {type(exc).__name__}: {exc}") from exc
    if not callable(factory):
        raise PluginLoadError(f"dual layer for {entry.key} from {entry.distribution} ({entry.target}) "
                              "is not callable; it must be a factory ctx -> DualLayer")
    return factory
