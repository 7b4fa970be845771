"""Exceptions raised by onnxdual. Every user-facing failure derives from :class:`OnnxDualError`,
so front ends (the CLI) can turn them into one clear line and a non-zero exit."""

from __future__ import annotations

from dataclasses import dataclass


class OnnxDualError(Exception):
    """Base class of every error onnxdual raises on purpose."""


class ModelLoadError(OnnxDualError):
    """The model file cannot be read, parsed or converted."""


class InvalidInputError(OnnxDualError):
    """A user-supplied value (eps, shapes, labels, data) does not fit the model or the method."""


class PluginLoadError(OnnxDualError):
    """A registered dual-layer plugin could not be imported or is not a valid factory."""


class UnsupportedError(OnnxDualError):
    """Valid input that onnxdual does not handle: an operator without a dual layer, a use of an operator its
    dual layer cannot handle, a property feature the verifier does not decide. Tools report these as
    ``unsupported`` rather than as errors."""


class UnsupportedNodeError(UnsupportedError, InvalidInputError):
    """A node whose operator has a dual layer, used in a way that dual layer cannot handle (e.g. a
    non-linear use of a linear operator)."""


class UnboundedRelaxationError(UnsupportedNodeError):
    """A node with no finite linear bound on the input bounds it was given (a divisor's or a Log's bounds
    reaching 0): the network is supported, these bounds are not; smaller input sets may be fine."""


@dataclass(frozen=True)
class MissingOp:
    """One graph node whose ONNX operator has no registered dual layer."""

    op_type: str
    domain: str
    opset: int
    node_name: str


class UnsupportedOpsError(UnsupportedError):
    """The graph uses operators without a dual layer. Lists all of them at once."""

    def __init__(self, missing: list[MissingOp]):
        self.missing = list(missing)
        by_op: dict[tuple[str, str, int], list[str]] = {}
        for m in self.missing:
            by_op.setdefault((m.domain, m.op_type, m.opset), []).append(m.node_name)
        parts = []
        for (domain, op, opset), nodes in sorted(by_op.items()):
            name = f"{domain}::{op}" if domain else op
            shown = ", ".join(repr(n) for n in nodes[:3]) + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")
            parts.append(f"{name} (opset {opset}; node {shown})")
        #: the first sentence alone: which operators are missing, where (for tables)
        self.summary = f"no dual layer for {len(by_op)} operator type(s): " + "; ".join(parts)
        super().__init__(
            self.summary
            + ". Install a plugin that provides them (entry-point group 'onnxdual.duals'; 'onnxdual plugins-guide'"
            + " shows how to write one) or run 'onnxdual ops' to list what is available."
        )


class DeadlineExceeded(OnnxDualError):
    """A time budget ran out before a computation finished (caught by whoever set the deadline)."""


class OutputBusyError(OnnxDualError):
    """Another process holds the lock of the output directory this run would write."""


class CheckpointError(InvalidInputError):
    """A training checkpoint is damaged or incomplete; the message names the part."""


class DivergenceError(OnnxDualError):
    """Training produced a non-finite loss or weight; the message names the epoch and step."""
