"""The dual-layer registry: ONNX operator version -> dual-layer factory, filled from the entry-point group
``onnxdual.duals``.

onnxdual's own dual layers are declared in its ``pyproject.toml`` exactly like a third-party plugin's, so
there is one code path. Two phases: *finding* reads only package metadata (fast; enough for
``onnxdual ops`` and for the "missing operators" check); *loading* imports a factory on first use.

Keys are ``(domain, op_type, since_version)``. Entry-point names are ``[domain::]OpType[@since_version]``:
``Relu`` (every version of the operator), ``Clip@13`` (only the operator version introduced in opset 13,
i.e. the one ONNX's schema resolves for models of opset 13 up to the next change), ``com.example::Gelu``
(a custom domain). The frontend resolves each node's ``since_version`` through the ONNX schema
(:func:`onnxdual.frontend.opset.since_version`); this module never reads ONNX itself.

Which entry answers a node: a plugin beats onnxdual's built-in; between two of the same kind, the
version-specific entry beats the all-versions one. Two plugins claiming the same key is an error unless
``ONNXDUAL_PLUGINS`` (a comma-separated allow-list of distribution names) selects one; the variable also
makes runs reproducible by ignoring every other installed plugin.

The registry is a value (:class:`Registry`): :func:`default` is the installed one, and
``default().with_overrides({...})`` a per-call overlay (tests, embedding users) passed to
:func:`onnxdual.load` / :func:`onnxdual.engine.build.build_dual`. The module functions
(:func:`find_duals`, :func:`lookup`, :func:`refresh`) act on the default registry.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Iterator, Mapping, NamedTuple, Union

from onnxdual.errors import PluginLoadError

GROUP = "onnxdual.duals"
BUILTIN_DISTRIBUTION = "onnxdual"
OVERRIDE_DISTRIBUTION = "<override>"
ALLOW_LIST_ENV = "ONNXDUAL_PLUGINS"
ALL_VERSIONS = 0


class OpKey(NamedTuple):
    """``(domain, op_type, since_version)``; ``since_version`` 0 (:data:`ALL_VERSIONS`) matches every
    version of the operator. The default domain is ``""`` (``ai.onnx`` is normalised to it)."""

    domain: str
    op_type: str
    since_version: int = ALL_VERSIONS

    @classmethod
    def parse(cls, entry_name: str) -> "OpKey":
        """``[domain::]OpType[@since_version]`` -> key; :class:`ValueError` for a malformed version."""
        domain, sep, rest = entry_name.rpartition("::")
        op_type, at, version = rest.partition("@")
        if at and not (version.isdigit() and int(version) > 0):
            raise ValueError(f"{entry_name!r}: the part after '@' must be a positive opset number")
        domain = domain if sep else ""
        return cls("" if domain == "ai.onnx" else domain, op_type, int(version) if at else ALL_VERSIONS)

    @property
    def operator(self) -> str:
        """``[domain::]OpType`` without the version."""
        return f"{self.domain}::{self.op_type}" if self.domain else self.op_type

    def __str__(self) -> str:
        return self.operator + (f"@{self.since_version}" if self.since_version else "")


@dataclass(frozen=True)
class DualEntry:
    """A found (not yet imported) dual-layer factory."""

    key: OpKey
    target: str  # "module:attribute"
    distribution: str
    version: str
    entry_point: metadata.EntryPoint | None
    factory: Callable | None = None  # set for overrides given as callables

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION

    def load(self) -> Callable:
        return self.factory if self.factory is not None else _load(self)


Override = Union[Callable, str]


class Registry:
    """An immutable table ``OpKey -> DualEntry`` after precedence (metadata only, nothing imported)."""

    def __init__(self, entries: Mapping[OpKey, DualEntry]):
        self._entries = dict(entries)

    def entries(self) -> dict[OpKey, DualEntry]:
        """Every registered dual layer, keyed by operator version (a copy)."""
        return dict(self._entries)

    def __iter__(self) -> Iterator[OpKey]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def lookup(self, op_type: str, domain: str = "", since_version: int | None = None) -> DualEntry | None:
        """The entry for a node's operator, or None. ``since_version`` is the operator version the ONNX
        schema resolves for the model's opset (None or 0 when unknown, e.g. a custom domain)."""
        if domain == "ai.onnx":
            domain = ""
        general = self._entries.get(OpKey(domain, op_type))
        specific = self._entries.get(OpKey(domain, op_type, since_version)) if since_version else None
        candidates = [e for e in (specific, general) if e is not None]
        if not candidates:
            return None
        # a plugin (or an override) beats a built-in; then the version-specific entry beats the general one
        return min(candidates, key=lambda e: (e.builtin, e is general))

    def with_overrides(self, overrides: Mapping[str | OpKey, Override]) -> "Registry":
        """A new registry where each name (entry-point syntax, or an :class:`OpKey`) maps to the given
        factory (a callable, or ``"module:attribute"``), replacing what this one has for that key."""
        table = dict(self._entries)
        for name, factory in overrides.items():
            key = name if isinstance(name, OpKey) else _parse(name, OVERRIDE_DISTRIBUTION)
            if isinstance(factory, str):
                ep = metadata.EntryPoint(str(key), factory, GROUP)
                table[key] = DualEntry(key, factory, OVERRIDE_DISTRIBUTION, "", ep)
            elif callable(factory):
                target = f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', '?')}"
                table[key] = DualEntry(key, target, OVERRIDE_DISTRIBUTION, "", None, factory)
            else:
                raise PluginLoadError(f"override for {key} is not callable; it must be a factory "
                                      "ctx -> DualLayer or a 'module:attribute' string")
        return Registry(table)


def _parse(name: str, distribution: str) -> OpKey:
    try:
        return OpKey.parse(name)
    except ValueError as exc:
        raise PluginLoadError(f"dual layer name from {distribution}: {exc}") from None


def _allowed() -> set[str] | None:
    raw = os.environ.get(ALLOW_LIST_ENV)
    if raw is None:
        return None
    return {name.strip().lower() for name in raw.split(",") if name.strip()} | {BUILTIN_DISTRIBUTION}


@functools.lru_cache(maxsize=None)
def _find_cached(allowed: frozenset[str] | None) -> Registry:
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
            key = _parse(ep.name, name)
            found.setdefault(key, []).append(DualEntry(key, ep.value, name, dist.version, ep))
    table: dict[OpKey, DualEntry] = {}
    for key, entries in found.items():
        external = [e for e in entries if not e.builtin]
        if len(external) > 1:
            names = ", ".join(sorted(f"{e.distribution} ({e.target})" for e in external))
            raise PluginLoadError(f"several plugins provide a dual layer for {key}: {names}; "
                                  f"choose one with {ALLOW_LIST_ENV}=<distribution>")
        table[key] = external[0] if external else entries[0]
    return Registry(table)


def default() -> Registry:
    """The installed registry (built-ins and plugins, filtered by ``ONNXDUAL_PLUGINS``), cached."""
    allowed = _allowed()
    return _find_cached(frozenset(allowed) if allowed is not None else None)


def find_duals() -> dict[OpKey, DualEntry]:
    """All registered dual layers of the default registry, keyed by operator version."""
    return default().entries()


def lookup(op_type: str, domain: str = "", since_version: int | None = None) -> DualEntry | None:
    """:meth:`Registry.lookup` on the default registry."""
    return default().lookup(op_type, domain, since_version)


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
