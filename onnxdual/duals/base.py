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

**Separate faces** (tighter than the paper, for certification). An activation may also give a *lower* and an
*upper* linear face, ``A_l x + b_l <= sigma(x) <= A_u x + b_u`` (:class:`Faces`; a triangle for ReLU). The
dual is no longer linear in ``nu``: a row's dual variable takes the lower face where it is positive and the
upper face where it is negative (``nu_in = A_l^T [nu]_+ + A_u^T [nu]_-``, objective ``b_l . [nu]_+ +
b_u . [nu]_-``), which is the same dual problem as Wong & Kolter (2018, §3) with the lower-face multipliers
of the unstable units chosen better (CROWN). Faces may carry *free parameters* (:class:`ParametricFaces`: for
ReLU the lower slope in ``[0, 1]``) that the engine optimises per output row; the faces must be sound for
every parameter value, so the optimiser can never break a bound. Projected estimates (Alg. 1) keep needing a
linear dual and always use :meth:`ActivationDual.relax`.

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

    def unsupported(self, why: str,
                    kind: type[UnsupportedNodeError] = UnsupportedNodeError) -> UnsupportedNodeError:
        """An error for a node this dual layer cannot handle (e.g. a non-linear use of a linear op), or with
        ``kind=UnboundedRelaxationError`` for input bounds on which it has no finite linear bound."""
        return kind(f"node {self.name!r} ({self.op_type}): {why}")


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

    def abs_linear(self, *radii: Tensor) -> Tensor | None:
        """``|A|`` applied to non-negative ``(N, *in_shape_i)`` tensors (the radii of input intervals), for
        interval bounds ``A x + b`` in ``[A c + b - |A| r, A c + b + |A| r]``. ``None`` (the default): this
        layer cannot say, and interval bounds are not used beyond it (they only ever tighten, see
        :mod:`onnxdual.engine.interval`). A map with non-negative entries returns ``self.linear(*radii)``."""
        return None

    def local_kernel(self) -> "LocalKernel | None":
        """The layer as a 2-d convolution of its one variable input (``None``, the default: it is not one).
        A local map lets an engine bound units through *patches*: a unit's dual row below a convolution
        only covers the unit's receptive field, so it is carried as a small window instead of a whole
        image (:mod:`onnxdual.engine.patches`). Only the geometry and the weight are needed; the offset
        still comes from :meth:`offset`."""
        return None

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

    def _tensors(self) -> list[Tensor]:
        """The module's parameters and buffers, then the constant inputs (all a MatMul module has)."""
        return [*self.ctx.module.parameters(), *self.ctx.module.buffers(),
                *(t for t in self.ctx.inputs if isinstance(t, Tensor))]

    def _dtype(self) -> torch.dtype:
        return next((p.dtype for p in self._tensors() if p.is_floating_point()), torch.get_default_dtype())

    def _device(self) -> torch.device:
        return next((p.device for p in self._tensors()), torch.device("cpu"))


@dataclass(frozen=True)
class LocalKernel:
    """A 2-d convolution ``z = conv(pad(x), weight)`` (no bias) as an affine layer declares it in
    :meth:`AffineDual.local_kernel`: ``weight`` is ``(C_out, C_in / groups, kh, kw)``, ``pads`` the zero
    padding before the first row and column (padding after the last only adds rows that a window never
    reaches or that are masked as outside the image)."""

    weight: Tensor
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


class LinearRelaxation(ABC):
    """An enclosure ``A x + low <= sigma(x) <= A x + high`` of an activation on its input box ``[l, u]``:
    a linear map ``A`` (chosen from the bounds) plus an interval. The dual of the activation is then
    ``nu_in = A^T nu`` with objective term ``nu^T (low + high) / 2 - |nu|^T (high - low) / 2`` -- the
    same-slope parallelogram of Corollary 2 when ``A`` is diagonal, and the same argument for any ``A``.

    ``low`` and ``high`` have the activation's *output* shape ``(B, *out_shape)``, ``high >= low``.
    Subclasses give ``A`` as :meth:`apply` and its transpose :meth:`transpose`; both act on dual columns."""

    low: Tensor
    high: Tensor

    constant = False  #: ``A = 0`` (a step function): a backward pass stops here, nothing below matters

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


def _rows(t: Tensor, nu: Tensor) -> Tensor:
    """``t`` of shape ``(B, *shape)`` (shared by every row) or ``(B, K, *shape)`` (one per row), aligned
    with ``nu`` of shape ``(B or 1, K, *shape)``."""
    return t if t.dim() == nu.dim() else t.unsqueeze(1)


def _offset_term(nu: Tensor, offset: Tensor) -> Tensor:
    """``offset . nu`` per row, ``(B, K)``, for a shared ``(B, *shape)`` or per-row ``(B, K, *shape)`` offset."""
    if offset.dim() == nu.dim():
        return (nu * offset).flatten(2).sum(-1)
    return (nu.flatten(2) @ offset.flatten(1).unsqueeze(-1)).squeeze(-1)


class Face(ABC):
    """One side of a relaxation: a linear function ``A x + b`` of the activation's input that stays below
    (a lower face) or above (an upper face) the activation on its input box."""
    constant = False  #: ``A = 0``: the face is the constant ``b``

    @abstractmethod
    def transpose(self, nu: Tensor) -> Tensor:
        """``A^T nu`` for ``nu`` of shape ``(B or 1, K, *out_shape)``; returns ``(B, K, *in_shape)``."""

    @abstractmethod
    def offset_term(self, nu: Tensor) -> Tensor:
        """``b . nu`` per row: ``(B, K)``."""


@dataclass(frozen=True)
class ElementwiseFace(Face):
    """``slope * x + offset`` element-wise; both ``(B, *shape)`` (shared by every row of the dual) or
    ``(B, K, *shape)`` (one per row: optimised parameters)."""

    slope: Tensor
    offset: Tensor

    def transpose(self, nu: Tensor) -> Tensor:
        return nu * _rows(self.slope, nu)

    def offset_term(self, nu: Tensor) -> Tensor:
        return _offset_term(nu, self.offset)


@dataclass(frozen=True)
class RelaxationFace(Face):
    """One side of a :class:`LinearRelaxation`: its map ``A`` with ``low`` (lower face) or ``high`` (upper)."""

    relaxation: LinearRelaxation
    offset: Tensor

    def transpose(self, nu: Tensor) -> Tensor:
        return self.relaxation.transpose(nu)

    def offset_term(self, nu: Tensor) -> Tensor:
        return _offset_term(nu, self.offset)


@dataclass(frozen=True)
class Faces:
    """``lower(x) <= sigma(x) <= upper(x)`` on the input box, each side its own linear face. In a lower
    bound of ``nu . sigma(x)`` the positive entries of ``nu`` take the lower face, the negative ones the
    upper face; so the dual variable below the activation is ``lower^T [nu]_+ + upper^T [nu]_-``."""

    lower: Face
    upper: Face

    @property
    def constant(self) -> bool:
        """Both faces are constants: the dual variable below the activation is zero."""
        return self.lower.constant and self.upper.constant

    @staticmethod
    def of(relaxation: LinearRelaxation) -> "Faces":
        """The two faces of a same-map relaxation (its bound equals the paper's dual term exactly)."""
        return Faces(RelaxationFace(relaxation, relaxation.low), RelaxationFace(relaxation, relaxation.high))

    def backward(self, nu: Tensor) -> tuple[Tensor, Tensor]:
        """The dual variable of the activation's input and the objective term, ``(B, K)``, of a lower bound
        of ``nu . sigma(x)``."""
        pos = nu.clamp(min=0)
        neg = nu - pos
        return (self.lower.transpose(pos) + self.upper.transpose(neg),
                self.lower.offset_term(pos) + self.upper.offset_term(neg))


class ParametricFaces(ABC):
    """Faces with free parameters ``theta`` that the engine may optimise (the optimised relaxation).

    ``faces(theta)`` must be sound for **every** ``theta`` (compute the offsets for the parameters given);
    :meth:`project` only keeps an optimiser inside the useful set (ReLU: lower slopes in ``[0, 1]``).
    Parameters are tensors of shape ``(B, *shape)`` (as :meth:`initial` returns them) or ``(B, K, *shape)``,
    one set per row of the dual (each output row gets its own slopes, as in alpha-CROWN)."""

    @abstractmethod
    def initial(self) -> tuple[Tensor, ...]:
        """The layer's adaptive choice (e.g. CROWN's lower slope); the optimiser starts here."""

    @abstractmethod
    def faces(self, theta: tuple[Tensor, ...]) -> Faces:
        """Sound faces for parameters ``theta``."""

    def project(self, theta: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """``theta`` moved into the layer's feasible set (default: unchanged)."""
        return theta


GapRule = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


class SlopeFaces(ParametricFaces):
    """Element-wise faces parametrised by their slopes: for *any* slope ``a``,
    ``a x + min g_a <= sigma(x) <= a x + max g_a`` with ``g_a(x) = sigma(x) - a x`` over ``[l, u]``.

    ``gaps(a, l, u)`` returns ``(min g_a, max g_a)`` over ``[l, u]`` element-wise, ``l``, ``u`` aligned with
    ``a`` (``(B, *shape)``, or ``(B, K, *shape)`` per row). Exact extremes make every slope sound, so the
    optimiser is free. ``free`` names the optimised faces; ``slope_range`` (numbers or tensors) clips it."""

    def __init__(self, gaps: GapRule, lower: Tensor, upper: Tensor, lower_slope: Tensor, upper_slope: Tensor,
                 free: Sequence[str] = ("lower", "upper"),
                 slope_range: tuple[Tensor | float, Tensor | float] | None = None):
        self.gaps, self.lower, self.upper = gaps, lower, upper
        self.lower_slope, self.upper_slope = lower_slope, upper_slope
        self.free, self.slope_range = tuple(free), slope_range

    def initial(self) -> tuple[Tensor, ...]:
        return tuple(self.lower_slope if side == "lower" else self.upper_slope for side in self.free)

    def faces(self, theta: tuple[Tensor, ...]) -> Faces:
        given = dict(zip(self.free, theta))
        lower = given.get("lower", self.lower_slope)
        upper = given.get("upper", self.upper_slope)
        fixed = self.__dict__.setdefault("_fixed", {})  # a face that is not free: its offset computed once
        off = [fixed[i] if i in fixed else self.gaps(a, _rows(self.lower, a), _rows(self.upper, a))[i]
               for i, a in enumerate((lower, upper))]
        fixed.update({i: off[i] for i, side in enumerate(("lower", "upper")) if side not in given})
        return Faces(ElementwiseFace(lower, off[0]), ElementwiseFace(upper, off[1]))

    def project(self, theta: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if self.slope_range is None:
            return theta
        lo, hi = self.slope_range
        return tuple(torch.clamp(t, lo, hi) if not isinstance(lo, Tensor)
                     else torch.clamp(t, _rows(lo, t), _rows(hi, t)) for t in theta)


class ActivationDual(DualLayer):
    """Dual of a non-linear operation of one variable input; needs bounds on that input. Element-wise
    activations return a :class:`Relaxation`; others (``MaxPool``: each output encloses one selected input)
    return their own :class:`LinearRelaxation`."""

    @abstractmethod
    def relax(self, lower: Tensor, upper: Tensor) -> LinearRelaxation:
        """A sound enclosure of the operation on the input box ``[lower, upper]`` (``(B, *in_shape)``): the
        paper's relaxation, linear in ``nu`` (what random projections need)."""

    def faces(self, lower: Tensor, upper: Tensor) -> Faces | ParametricFaces:
        """Separate lower and upper faces on ``[lower, upper]`` (tighter relaxations); the default is the two
        sides of :meth:`relax`, so a layer without its own faces is exactly as tight as the paper."""
        return Faces.of(self.relax(lower, upper))

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor] | None:
        """Element-wise bounds of the output over the input box (interval bounds); ``None``: unknown."""
        return None

    def needs_bounds(self, lower: Tensor, upper: Tensor) -> Tensor:
        """Which input units (``(B, *in_shape)``, bool) would relax tighter with tighter bounds: the units
        whose bounds the optimised relaxation keeps improving. Default: every non-degenerate unit."""
        return lower < upper


class ConstantDual(DualLayer):
    """Marker for operations that never depend on the network input (e.g. ``Constant``)."""


SlopeRule = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def chord_slope(lower: Tensor, upper: Tensor, f_lower: Tensor, f_upper: Tensor) -> Tensor:
    """Slope of the chord of ``sigma`` over ``[l, u]``: ``u / (u - l)`` for a crossing ReLU (eq. 11).
    Degenerate intervals (``u == l``) get slope 0, which is sound with the offsets below."""
    width = upper - lower
    safe = torch.where(width > 0, width, torch.ones_like(width))
    return torch.where(width > 0, (f_upper - f_lower) / safe, torch.zeros_like(width))


def _candidates(lower: Tensor, upper: Tensor, kinks: Sequence[float | Tensor]) -> list[Tensor]:
    """Where a continuous piecewise-linear function minus a linear one can have its extremes on
    ``[l, u]``: the kinks (clamped into the interval), then the ends. Kinks come first because the
    extremes return the first of tied entries: at the ends of a slope range an end point ties with a kink
    (ReLU's lower face ``a x`` at ``a = 0`` or ``1``), and only the kink gives the derivative that holds
    inside the range, which is what the optimiser needs."""
    return [torch.minimum(torch.maximum(torch.as_tensor(k, dtype=lower.dtype, device=lower.device)
                                        .expand_as(lower), lower), upper) for k in kinks] + [lower, upper]


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
    gaps = torch.stack([fn(c) - slope * c for c in _candidates(lower, upper, kinks)])
    return Relaxation(slope=slope, low=gaps.min(0).values, high=gaps.max(0).values)


class ElementwiseActivation(ActivationDual):
    """Convenience base: a continuous piecewise-linear activation given by ``fn`` and its ``kinks``.

    ``slope_rule`` is the paper relaxation's slope (default: the chord, the paper's choice). The separate
    faces (:class:`SlopeFaces`) start from ``lower_rule`` / ``upper_rule`` (default: ``slope_rule``); any
    slope is sound because the offsets are the exact extremes of ``fn(x) - a x`` over the candidates. The
    optimiser moves the faces named in ``free`` within ``slope_range``."""

    def __init__(self, ctx: NodeContext, fn: Callable[[Tensor], Tensor], kinks: Sequence[float | Tensor] = (),
                 slope_rule: SlopeRule = chord_slope, *, lower_rule: SlopeRule | None = None,
                 upper_rule: SlopeRule | None = None, free: Sequence[str] = ("lower", "upper"),
                 slope_range: tuple[float, float] | None = None):
        super().__init__(ctx)
        self.fn, self.kinks, self.slope_rule = fn, tuple(kinks), slope_rule
        self.lower_rule, self.upper_rule = lower_rule or slope_rule, upper_rule or slope_rule
        self.free, self.slope_range = tuple(free), slope_range

    def relax(self, lower: Tensor, upper: Tensor) -> Relaxation:
        return piecewise_linear_relaxation(self.fn, lower, upper, self.kinks, self.slope_rule)

    def _gaps(self, slope: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """Exact extremes of ``fn(x) - slope x`` on ``[lower, upper]``: at a kink or an end."""
        g = torch.stack([self.fn(c) - slope * c for c in _candidates(lower, upper, self.kinks)])
        return g.min(0).values, g.max(0).values

    def faces(self, lower: Tensor, upper: Tensor) -> SlopeFaces:
        f_lower, f_upper = self.fn(lower), self.fn(upper)
        slope_range = None
        if self.slope_range is not None:  # where fn is linear on [l, u] its own slope is exact: keep it
            chord = chord_slope(lower, upper, f_lower, f_upper)
            inside = self.needs_bounds(lower, upper)
            lo, hi = self.slope_range
            slope_range = (torch.where(inside, torch.full_like(chord, lo), chord),
                           torch.where(inside, torch.full_like(chord, hi), chord))
        return SlopeFaces(self._gaps, lower, upper, self.lower_rule(lower, upper, f_lower, f_upper),
                          self.upper_rule(lower, upper, f_lower, f_upper), self.free, slope_range)

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        values = torch.stack([self.fn(c) for c in _candidates(lower, upper, self.kinks)])
        return values.min(0).values, values.max(0).values

    def needs_bounds(self, lower: Tensor, upper: Tensor) -> Tensor:
        inside = torch.zeros_like(lower, dtype=torch.bool)
        for k in self.kinks:
            k = torch.as_tensor(k, dtype=lower.dtype, device=lower.device)
            inside |= (lower < k) & (k < upper)
        return inside
