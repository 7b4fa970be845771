"""The dual-layer contract (Wong et al. 2018, Theorem 1 and Appendix F).

A network is a DAG of operations ``z_v = f_v(z_parents)`` (paper eq. 1). For each operation a *dual layer*
upper-bounds the conjugate of its indicator (eq. 6). onnxdual supports the two families for which the
dual layer is linear, which is what AutoDual (Alg. 3) and random projections (Alg. 1) need:

* :class:`AffineDual` -- ``z = A(x_1, ..., x_n) + b`` for a linear map ``A`` (Corollary 1, App. B.1, B.2, B.5).
  Its dual is ``nu_i = A_i^T nu`` with objective term ``b^T nu``.
* :class:`ActivationDual` -- a function ``z = sigma(x)`` that, given pre-activation bounds ``l <= x <= u``,
  is enclosed by a linear map plus an interval (:class:`LinearRelaxation`); for an element-wise function
  a *same-slope parallelogram* (:class:`Relaxation`)::

      slope * x + low <= sigma(x) <= slope * x + high     for l <= x <= u

  Its dual is ``nu_in = diag(slope) nu`` with objective term
  ``nu^T (low + high) / 2 - |nu|^T (high - low) / 2``. For ReLU with ``slope = u / (u - l)``,
  ``low = 0``, ``high = -slope * l`` this is exactly Corollary 2 (eq. 10, 11): ``-l [nu]_+`` rewritten as
  ``[nu]_+ = (nu + |nu|) / 2`` -- the same split Theorem 2 (eq. 13) uses for its estimate. A general
  ``A`` in place of ``diag(slope)`` (e.g. MaxPool selecting one input per window) changes nothing else.

Everything an engine needs follows from these few methods, so a plugin implements only the operator's own
math; it never sees batching, chunking, projections or the graph.

Tensor conventions: operators act on tensors whose leading dimension is a flat batch ``N`` (examples, or
examples x dual columns) followed by the operator's per-example shape, exactly like the concrete module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from onnxdual.errors import InvalidInputError, UnsupportedNodeError


@dataclass(frozen=True)
class NodeContext:
    """Everything a dual-layer factory may use to build the dual of one graph node, in ONNX terms.

    Attributes:
        name: the node's ONNX name (for messages).
        op_type, domain, opset: the ONNX operator and the opset version the model imports for its domain.
        attributes: the ONNX node attributes, decoded to Python values (defaults are not filled in).
        module: the torch module that computes the node; use it only through :meth:`call`.
        inputs: one entry per ONNX input of the node: ``None`` for an input that depends on the network
            input ("variable") or is omitted, otherwise its constant value (an initializer, a ``Constant``
            or a constant subgraph's value; a trainable weight is the live tensor training updates).
        input_shapes: per-example shapes (no batch dimension) of the variable inputs, ``None`` elsewhere.
        output_shape: per-example shape of the node's output.
        since_version: the operator version the ONNX schema resolves for ``opset`` (None: no schema).
    """

    name: str
    op_type: str
    domain: str
    opset: int
    attributes: dict[str, Any]
    module: nn.Module
    inputs: tuple[Tensor | None, ...]
    input_shapes: tuple[torch.Size | None, ...]
    output_shape: torch.Size
    kwargs: dict[str, Any] = field(default_factory=dict)
    since_version: int | None = None
    variables: tuple[int, ...] | None = None  # positions of the variable inputs (None: where inputs is None)
    module_args: tuple[Any, ...] | None = None  # the module's arguments, None for variable ones

    @property
    def variable_positions(self) -> tuple[int, ...]:
        """ONNX input positions of the variable inputs, in order."""
        if self.variables is not None:
            return self.variables
        return tuple(i for i, value in enumerate(self.inputs) if value is None)

    def constant(self, position: int) -> Tensor | None:
        """The constant value of ONNX input ``position``; None if it is variable, omitted or absent."""
        return self.inputs[position] if position < len(self.inputs) else None

    def call(self, *variable_values: Tensor) -> Tensor:
        """Run the node's module with the variable inputs substituted (constants filled in)."""
        it = iter(variable_values)
        template = self.module_args if self.module_args is not None else self.inputs
        args = [next(it) if value is None else value for value in template]
        out = self.module(*args, **self.kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out

    def unsupported(self, why: str) -> UnsupportedNodeError:
        """An error for a node this dual layer cannot handle (e.g. a non-linear use of a linear op)."""
        return UnsupportedNodeError(f"node {self.name!r} ({self.op_type}): {why}")


class DualLayer(ABC):
    """Base of every dual layer. Build one with a factory ``factory(ctx: NodeContext) -> DualLayer``
    registered under the entry-point group ``onnxdual.duals`` (see ``plugins/README.md``)."""

    def __init__(self, ctx: NodeContext):
        self.ctx = ctx

    def forward(self, *xs: Tensor) -> Tensor:
        """The operation itself on concrete variable inputs ``(N, *in_shape)``."""
        return self.ctx.call(*xs)


class AffineDual(DualLayer):
    """Dual of an affine operation ``z = A(x_1..x_n) + b`` (Corollary 1).

    Subclasses implement :meth:`linear`; :meth:`forward` (the op with its offset) defaults to the module,
    :meth:`transpose` (``A^T``) defaults to a vector-Jacobian product of :meth:`linear`, which is exact
    because ``linear`` is linear. Override it when a closed form is faster (conv-transpose, matmul).
    """

    @abstractmethod
    def linear(self, *xs: Tensor | None) -> Tensor:
        """``A(x_1..x_n)`` without offset, on ``(N, *in_shape_i)`` tensors.

        For operations with several variable inputs an entry may be ``None``: that input carries no
        contribution (treat it as zero, without allocating)."""

    def offset(self) -> Tensor:
        """``b`` as a ``(1, *out_shape)`` tensor: the operation applied to all-zero variable inputs."""
        zeros = [torch.zeros((1, *shape), dtype=self._dtype(), device=self._device())
                 for shape in self.ctx.input_shapes if shape is not None]
        return self.forward(*zeros)

    def transpose(self, nu: Tensor) -> tuple[Tensor | None, ...]:
        """``A_i^T nu`` for each variable input i; ``nu`` is ``(N, *out_shape)``."""
        n = nu.shape[0]
        xs = [torch.zeros((n, *shape), dtype=nu.dtype, device=nu.device, requires_grad=True)
              for shape in self.ctx.input_shapes if shape is not None]
        with torch.enable_grad():
            out = self.linear(*xs)
            grads = torch.autograd.grad(out, xs, nu, create_graph=nu.requires_grad or torch.is_grad_enabled(),
                                        allow_unused=True)
        return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads))

    def _dtype(self) -> torch.dtype:
        for p in list(self.ctx.module.parameters()) + list(self.ctx.module.buffers()):
            if p.is_floating_point():
                return p.dtype
        return torch.get_default_dtype()

    def _device(self) -> torch.device:
        for p in list(self.ctx.module.parameters()) + list(self.ctx.module.buffers()):
            return p.device
        return torch.device("cpu")


class LinearRelaxation(ABC):
    """An enclosure ``A x + low <= sigma(x) <= A x + high`` of an activation on its input box ``[l, u]``:
    a linear map ``A`` (chosen from the bounds) plus an interval. The dual of the activation is then
    ``nu_in = A^T nu`` with objective term ``nu^T (low + high) / 2 - |nu|^T (high - low) / 2`` -- the
    same-slope parallelogram of Corollary 2 when ``A`` is diagonal, and the same argument for any ``A``.

    ``low`` and ``high`` have the activation's *output* shape ``(B, *out_shape)``, ``high >= low``.
    Subclasses give ``A`` as :meth:`apply` and its transpose :meth:`transpose`; both act on dual columns."""

    low: Tensor
    high: Tensor

    @property
    def mid(self) -> Tensor:
        return (self.low + self.high) / 2

    @property
    def half_width(self) -> Tensor:
        return (self.high - self.low) / 2

    @abstractmethod
    def apply(self, x: Tensor) -> Tensor:
        """``A x`` for columns ``x`` of shape ``(B or 1, K, *in_shape)`` (``1``: shared by the batch);
        returns ``(B, K, *out_shape)``."""

    @abstractmethod
    def transpose(self, nu: Tensor) -> Tensor:
        """``A^T nu`` for ``nu`` of shape ``(B or 1, K, *out_shape)``; returns ``(B, K, *in_shape)``."""


@dataclass(frozen=True)
class Relaxation(LinearRelaxation):
    """A same-slope parallelogram ``slope*x + low <= sigma(x) <= slope*x + high`` on ``[l, u]`` for an
    element-wise activation (``A = diag(slope)``).

    All three tensors have the pre-activation's shape ``(B, *shape)``; ``high >= low`` everywhere."""

    slope: Tensor
    low: Tensor
    high: Tensor

    def apply(self, x: Tensor) -> Tensor:
        return self.slope.unsqueeze(1) * x

    def transpose(self, nu: Tensor) -> Tensor:
        return nu * self.slope.unsqueeze(1)


class ActivationDual(DualLayer):
    """Dual of a non-linear operation of one variable input; needs bounds on that input. Element-wise
    activations return a :class:`Relaxation`; others (``MaxPool``: each output encloses one selected input)
    return their own :class:`LinearRelaxation`."""

    @abstractmethod
    def relax(self, lower: Tensor, upper: Tensor) -> LinearRelaxation:
        """A sound enclosure of the operation on the input box ``[lower, upper]`` (``(B, *in_shape)``)."""


class ConstantDual(DualLayer):
    """Marker for operations that never depend on the network input (e.g. ``Constant``)."""


SlopeRule = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def chord_slope(lower: Tensor, upper: Tensor, f_lower: Tensor, f_upper: Tensor) -> Tensor:
    """Slope of the chord of ``sigma`` over ``[l, u]``: ``u / (u - l)`` for a crossing ReLU (eq. 11).
    Degenerate intervals (``u == l``) get slope 0, which is sound with the offsets below."""
    width = upper - lower
    safe = torch.where(width > 0, width, torch.ones_like(width))
    return torch.where(width > 0, (f_upper - f_lower) / safe, torch.zeros_like(width))


def piecewise_linear_relaxation(
    fn: Callable[[Tensor], Tensor],
    lower: Tensor,
    upper: Tensor,
    kinks: Sequence[float | Tensor],
    slope_rule: SlopeRule = chord_slope,
) -> Relaxation:
    """Tightest same-slope parallelogram for a continuous piecewise-linear ``fn`` with the given kinks.

    ``fn(x) - slope * x`` is piecewise linear, so its extremes on ``[l, u]`` lie at ``l``, ``u`` or a kink
    inside the interval; evaluating there gives exact offsets for any slope."""
    f_lower, f_upper = fn(lower), fn(upper)
    slope = slope_rule(lower, upper, f_lower, f_upper)
    candidates = [lower, upper] + [torch.minimum(torch.maximum(torch.as_tensor(k, dtype=lower.dtype,
                                                                               device=lower.device)
                                                               .expand_as(lower), lower), upper)
                                   for k in kinks]
    gaps = torch.stack([fn(c) - slope * c for c in candidates])
    return Relaxation(slope=slope, low=gaps.min(0).values, high=gaps.max(0).values)


class ElementwiseActivation(ActivationDual):
    """Convenience base: a continuous piecewise-linear activation given by ``fn`` and its ``kinks``.

    ``slope_rule`` is the relaxation's free parameter (default: the chord, the paper's choice)."""

    def __init__(self, ctx: NodeContext, fn: Callable[[Tensor], Tensor], kinks: Sequence[float | Tensor] = (),
                 slope_rule: SlopeRule = chord_slope):
        super().__init__(ctx)
        self.fn, self.kinks, self.slope_rule = fn, tuple(kinks), slope_rule

    def relax(self, lower: Tensor, upper: Tensor) -> Relaxation:
        return piecewise_linear_relaxation(self.fn, lower, upper, self.kinks, self.slope_rule)
