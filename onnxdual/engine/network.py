"""The public dual network: ``DualNetwork(net, x, eps)`` and ``robust_loss`` (as in the paper's code).

Building is separate from computing: the constructor only records the problem; the AutoDual pass runs on
the first call that needs it, in chunks of examples that fit a memory budget.

A *bound* and an *estimate* are different types. :meth:`DualNetwork.lower_bound` only exists for exact
dual networks and returns a sound lower bound; with random projections (``proj=r``) the network offers
:meth:`DualNetwork.estimate`, whose :class:`Estimate` result can never be mistaken for a certificate.
Between the two, :meth:`DualNetwork.probable_lower_bound` returns a :class:`ProbableBound`: a lower bound
that holds with probability at least ``1 - delta`` over its random projections (App. E), for networks too
large for exact bounds.

``relaxation`` chooses how activations are relaxed for exact bounds: ``"paper"`` (the same-slope
parallelogram of Corollary 2; the only one random projections can use, so training with projections keeps
it), ``"adaptive"`` (separate faces with each dual layer's adaptive choice: CROWN's lower ReLU slope) or
``"optimized"`` (the faces' free parameters optimised for the objective at hand, :mod:`onnxdual.engine.optimize`).
Each is a sound bound; for the built-in layers ``paper <= adaptive <= optimized`` entry by entry.

``net`` is a network from :func:`onnxdual.load` or a plain torch module, which is exported to ONNX for
inputs shaped like ``x`` and loaded back (:func:`onnxdual.frontend.export.as_network`), as the paper's code
takes ``nn.Sequential`` models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onnxdual.duals.base import ActivationDual
from onnxdual.engine.autodual import RELAXATIONS, PassResult, Splits, forward_pass, objective
from onnxdual.engine.build import BuiltDual, build_dual
from onnxdual.engine.cost import examples_per_pass
from onnxdual.engine.input_sets import InputSet, make_input_set
from onnxdual.engine.interval import interval_bound
from onnxdual.engine.optimize import OptimizeOptions, examples_per_optimization, optimized_bound
from onnxdual.engine.probable import probable_pass
from onnxdual.errors import InvalidInputError
from onnxdual.frontend.export import as_network

#: default memory budget of the exact pass, bytes (chunks of examples are sized to stay under it)
DEFAULT_MEMORY_BUDGET = 2 * 1024**3


@dataclass(frozen=True)
class IntervalBounds:
    """Sound element-wise bounds ``lower <= z <= upper`` of one node over the input set."""

    lower: Tensor
    upper: Tensor


@dataclass(frozen=True)
class Estimate:
    """A random-projection *estimate* of the dual objective (Theorem 2). Not a bound: about half of its
    entries exceed the exact value. Use it for training, never for certification."""

    value: Tensor
    proj: int


@dataclass(frozen=True)
class ProbableBound:
    """A lower bound of the dual objective that holds with probability at least ``1 - delta`` over the
    random projections behind its intermediate bounds (App. E), for each example separately. It is not a
    deterministic certificate: report it with its ``delta``.

    ``estimates`` is the number ``N`` of norm estimates the failure probability was split over (union
    bound); ``k`` columns per geometric estimate, the maximum over ``m`` of them."""

    value: Tensor
    delta: float
    k: int
    m: int
    estimates: int


class DualNetwork:
    """The dual network of ``net`` around inputs ``x`` (Theorem 1).

    Args:
        net: a network from :func:`onnxdual.load`, or a torch module (bounded as in eval mode: exported to
            ONNX for inputs shaped like ``x`` and loaded back, :func:`~onnxdual.frontend.export.as_network`).
        x: inputs ``(B, *in_shape)``; the device of ``x`` is where everything is computed.
        eps: radius of the perturbation ball: a float, or for ``norm="linf"`` a tensor broadcastable to
            ``x`` (per-coordinate radii, e.g. a VNN-LIB box as centre ``x`` and radii ``eps``).
        norm: ``"linf"`` or ``"l2"``.
        proj: ``None`` for exact bounds, or the number ``r`` of random projections (Alg. 1) for estimates.
        clip: optional data domain ``(lo, hi)`` intersected with an l-inf ball (e.g. pixels in ``(0, 1)``).
        generator: random generator for the projections (reproducible runs).
        memory_budget: bytes the exact pass may use; examples are processed in chunks that fit.
        splits: branch and bound: for activation nodes (by name, as in :meth:`bounds`), per-example
            ``(lower, upper)`` limits of their input, each ``(B, *input_shape)``. The bounds then hold for
            the inputs of the set whose pre-activations lie within the limits (a ReLU split ``x_j >= 0`` is
            ``lower[j] = 0``); an example whose limits leave no input gets ``+inf``.
        relaxation: ``"paper"`` (default), ``"adaptive"`` or ``"optimized"`` (exact bounds only; see the
            module docstring).
        optimize: how ``"optimized"`` optimises (iterations, step size, early stop).
    """

    def __init__(self, net: nn.Module, x: Tensor, eps: float | Tensor, norm: str = "linf",
                 proj: int | None = None, *, clip: tuple[float, float] | None = None,
                 generator: torch.Generator | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 splits: Splits | None = None, relaxation: str = "paper",
                 optimize: OptimizeOptions | None = None):
        if relaxation not in RELAXATIONS:
            raise InvalidInputError(f"relaxation must be one of {', '.join(RELAXATIONS)}, got {relaxation!r}")
        if relaxation != "paper" and proj is not None:
            raise InvalidInputError(f"the {relaxation!r} relaxation needs exact bounds: random projections "
                                    "(proj) need the paper's relaxation, whose dual is linear")
        if optimize is not None and not isinstance(optimize, OptimizeOptions):
            raise InvalidInputError("optimize must be an onnxdual.engine.optimize.OptimizeOptions")
        if proj is not None and (isinstance(proj, bool) or not isinstance(proj, int) or proj < 1):
            raise InvalidInputError(f"proj must be None or a positive number of projections, got {proj!r}")
        if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
            raise InvalidInputError("x must be a floating-point tensor of shape (batch, *input_shape)")
        self.net = as_network(net, x)
        self.x = x
        self.input_set: InputSet = make_input_set(x, eps, norm, clip)
        self.norm = norm
        self.proj = proj
        self.generator = generator
        self.memory_budget = memory_budget
        self.splits: Splits = dict(splits or {})
        self.relaxation = relaxation
        self.optimize = optimize or OptimizeOptions()
        self._optimized: list[tuple[slice, PassResult]] | None = None
        self._built: BuiltDual | None = None
        self._passes: list[tuple[slice, PassResult]] | None = None
        self._probable: dict[tuple[float, int, int], tuple[list[tuple[slice, PassResult]], int]] = {}

    # -- building -------------------------------------------------------------------------------------
    @property
    def built(self) -> BuiltDual:
        if self._built is None:
            self._built = build_dual(self.net, self.x)
            if self._built.input_shape != self.x.shape[1:]:
                raise InvalidInputError(f"inputs of shape {tuple(self.x.shape[1:])} do not fit the network")
        return self._built

    def chunk_size(self) -> int:
        """Examples per exact pass so that its forward phase fits the memory budget (the pass's own switch
        rule, :mod:`onnxdual.engine.cost`)."""
        if self.proj is not None:
            return self.x.shape[0]
        return examples_per_pass(self.built, self.input_set.column_range(), self.x.shape[0],
                                 self.x.element_size(), self.memory_budget)

    # -- computing -------------------------------------------------------------------------------------
    def _ensure_pass(self) -> list[tuple[slice, PassResult]]:
        if self._passes is None:
            step = self.chunk_size()
            self._passes = []
            for start in range(0, self.x.shape[0], step):
                index = slice(start, min(start + step, self.x.shape[0]))
                self._passes.append((index, self._pass(index)))
        return self._passes

    def _pass(self, index: slice) -> PassResult:
        """The pass over examples ``index``: the paper's relaxation, or separate faces at their adaptive
        choice (what "optimized" starts from)."""
        splits = {name: (lo[index], hi[index]) for name, (lo, hi) in self.splits.items()}
        return forward_pass(self.built, self.input_set.chunk(index), self.proj, self.generator, self.memory_budget,
                            splits, relaxation="paper" if self.relaxation == "paper" else "adaptive",
                            stop=self.optimize.stop)

    def _check_c(self, c: Tensor) -> Tensor:
        out_shape = self.built.output_shape
        if c.dim() != 3 or c.shape[0] != self.x.shape[0] or c.shape[2] != math.prod(out_shape):
            raise InvalidInputError(f"C must have shape (batch={self.x.shape[0]}, m, n_out="
                                    f"{math.prod(out_shape)}), got {tuple(c.shape)}")
        return c.to(self.x.dtype)

    def _optimized_objective(self, c: Tensor, inner: dict[str, Tensor] | None) -> Tensor:
        """The optimised bound, chunk by chunk, warm-started from each chunk's adaptive pass; remembers
        the tightest intermediate bounds it saw (for :meth:`bounds` and :meth:`activation_duals`).

        A chunk holds as many examples as their per-row parameters fit in the memory budget; the adaptive
        pass is computed per chunk (a pass over the whole batch first would be several times slower per
        example, its row tensors far larger). The first chunk is one example, whose pass says how many fit
        in the next; a chunk whose examples turn out to need more is cut to what fits and passed again."""
        c = self._check_c(c)
        out_shape = self.built.output_shape
        self._activation_inputs(inner or {})
        parts, passes = [], []
        n, limit = self.x.shape[0], self.chunk_size()
        start, size = 0, 1
        while start < n:
            index = slice(start, min(start + size, start + limit, n))
            result = self._pass(index)
            fits = examples_per_optimization(self.built, result, c.shape[1], self.x.element_size(), self.optimize)
            if fits < index.stop - index.start:  # fewer than the last chunk: these examples need more rows
                index = slice(start, start + fits)
                result = self._pass(index)
            ci = c[index].reshape(c[index].shape[0], c.shape[1], *out_shape)
            found = optimized_bound(self.built, self.input_set.chunk(index), result, ci, self.optimize,
                                    {name: v[index] for name, v in (inner or {}).items()})
            parts.append(found.value)
            passes.append((index, found.result))
            start, size = index.stop, fits
        self._optimized = passes
        return torch.cat(parts)

    def _objective(self, c: Tensor, passes: list[tuple[slice, PassResult]] | None = None,
                   record: dict[str, Tensor] | None = None, inner: dict[str, Tensor] | None = None) -> Tensor:
        if self.relaxation == "optimized" and passes is None and record is None:
            return self._optimized_objective(c, inner)
        c = self._check_c(c)
        out_shape = self.built.output_shape
        values = self._activation_inputs(inner or {})
        parts, recorded = [], []
        for index, result in self._ensure_pass() if passes is None else passes:
            ci = c[index].reshape(c[index].shape[0], c.shape[1], *out_shape)
            chunk_record: dict[str, Tensor] = {}
            chunk_inner = {values[name]: v[index] for name, v in (inner or {}).items()}
            value = objective(self.built, self.input_set.chunk(index), result.relaxations, ci,
                              chunk_record if record is not None else None, chunk_inner)
            if result.empty is not None:  # no input satisfies these split constraints
                value = value.masked_fill(result.empty.unsqueeze(1), float("inf"))
            parts.append(value)
            recorded.append((index.stop - index.start, chunk_record))
        if record is not None:
            for name in recorded[0][1]:
                record[name] = torch.cat([r[name].expand(n, *r[name].shape[1:]) for n, r in recorded])
        return torch.cat(parts)

    def activation_duals(self, c: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The lower bound of ``C f(x')`` (as :meth:`lower_bound`) and the dual variable ``nu`` at every
        activation's output (eq. 8), ``(B, m, *out_shape)`` by node name: how much each unit's relaxation
        costs the bound (what to split in branch and bound); and the one at the input under
        :data:`~onnxdual.engine.autodual.INPUT_DUAL` (where the relaxation is lowest: attack starts).
        Exact networks only. With the optimised relaxation, the faces are the adaptive ones on the tightest
        bounds the last optimisation found."""
        if self.proj is not None:
            raise TypeError("dual variables of a projected network belong to estimates, not bounds")
        record: dict[str, Tensor] = {}
        value = self._objective(c, passes=self._optimized, record=record)
        return value, record

    def _activation_inputs(self, inner: dict[str, Tensor]) -> dict[str, str]:
        """Activation node name -> the value name of its input (checks the names and shapes of ``inner``)."""
        values = {s.node.name: s.variable_inputs[0] for s in self.built.steps
                  if isinstance(s.layer, ActivationDual)}
        for name, value in inner.items():
            if name not in values:
                raise InvalidInputError(f"{name!r} is not an activation of this network")
            if value.dim() < 3 or value.shape[0] != self.x.shape[0]:
                raise InvalidInputError(f"inner[{name!r}] must have shape (batch, m, *input_shape)")
        return values

    def lower_bound(self, c: Tensor, inner: dict[str, Tensor] | None = None) -> Tensor:
        """Sound lower bound of ``C f(x')`` over the input set: ``(B, m)`` for ``C`` ``(B, m, n_out)``.

        ``inner`` (by activation node name, each ``(B, m, *input_shape)``) adds terms on activation inputs:
        the result bounds ``C f(x') + sum_v inner[v] . x_v(x')``. With ``splits``, a term ``-beta x_j``
        (``beta >= 0``) for a split ``x_j >= 0``, or ``+beta x_j`` for ``x_j <= 0``, is never positive on
        the branch, so the result still bounds ``C f(x')`` there: a Lagrange multiplier of the split
        constraint, which the dual otherwise does not see (tune ``beta`` to tighten)."""
        if self.proj is not None:
            raise TypeError("a DualNetwork with random projections gives estimates, not bounds: "
                            "use .estimate(C), or proj=None for a certificate")
        return self._objective(c, inner=inner)

    def interval_lower_bound(self, c: Tensor) -> Tensor:
        """Sound lower bound of ``C f(x')`` by interval bound propagation (IBP, Gowal et al. 2018; the
        affine layers after the last activation composed with ``C``): ``(B, m)``. Looser than
        :meth:`lower_bound` but cheaper (no dual pass); independent of ``proj`` and ``relaxation``, and
        differentiable in the parameters (IBP and CROWN-IBP training)."""
        c = self._check_c(c)
        if self.splits:
            raise InvalidInputError("interval bounds do not take split constraints")
        try:
            return interval_bound(self.built, self.input_set, c.reshape(c.shape[0], c.shape[1],
                                                                         *self.built.output_shape))
        except ValueError as exc:
            raise InvalidInputError(f"interval bounds: {exc}") from None

    def estimate(self, c: Tensor) -> Estimate:
        """The dual objective with projected intermediate bounds (training); exact if ``proj`` is None."""
        return Estimate(self._objective(c), self.proj or 0)

    def probable_lower_bound(self, c: Tensor, delta: float = 0.01, k: int = 200, m: int = 10,
                             ) -> ProbableBound:
        """Lower bound of ``C f(x')`` that holds with probability at least ``1 - delta`` per example (App. E).

        Intermediate bounds come from ``k * m`` fresh random projections per activation and source (the
        maximum of ``m`` geometric estimators of ``k`` columns each, scaled so that all of them bound their
        norm from above with the required probability); small layers are bounded exactly instead. The
        objective itself is then exact given those bounds. Independent of ``proj``; uses ``generator``."""
        if self.splits:
            raise InvalidInputError("high-probability bounds do not take split constraints")
        if not (isinstance(delta, float | int) and 0 < delta < 1):
            raise InvalidInputError(f"delta must lie in (0, 1), got {delta!r}")
        for name, value in (("k", k), ("m", m)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        c = self._check_c(c)
        key = (float(delta), k, m)
        if key not in self._probable:
            built = self.built
            sources = 1 + sum(isinstance(s.layer, ActivationDual) for s in built.steps)
            per_example = 4 * k * m * sources * built.largest_value * self.x.element_size()
            step = max(1, min(self.x.shape[0], self.memory_budget // max(per_example, 1)))
            passes, count = [], 0
            for start in range(0, self.x.shape[0], step):
                index = slice(start, min(start + step, self.x.shape[0]))
                result, count = probable_pass(built, self.input_set.chunk(index), float(delta), k, m,
                                              self.generator, self.memory_budget)
                passes.append((index, result))
            self._probable[key] = (passes, count)
        passes, count = self._probable[key]
        return ProbableBound(self._objective(c, passes), float(delta), k, m, count)

    def bounds(self) -> dict[str, IntervalBounds]:
        """Pre-activation bounds of every activation's input, keyed by the activation node's name
        (exact networks only). With the optimised relaxation: the tightest bounds the last
        :meth:`lower_bound` found (before any, the adaptive pass's)."""
        if self.proj is not None:
            raise TypeError("pre-activation bounds of a projected network are estimates, not bounds")
        merged: dict[str, IntervalBounds] = {}
        passes = self._optimized or self._ensure_pass()
        for name in passes[0][1].preactivation_bounds:
            lows = torch.cat([r.preactivation_bounds[name][0] for _, r in passes])
            highs = torch.cat([r.preactivation_bounds[name][1] for _, r in passes])
            merged[name] = IntervalBounds(lows, highs)
        return merged


def margin_matrix(y: Tensor, num_classes: int) -> Tensor:
    """``C = e_y - e_j`` for every class j: ``(B, num_classes, num_classes)``; row ``y`` is zero."""
    eye = torch.eye(num_classes, dtype=torch.get_default_dtype(), device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def robust_loss(net: nn.Module, eps: float | Tensor, x: Tensor, y: Tensor, norm: str = "linf",
                proj: int | None = None, *, clip: tuple[float, float] | None = None,
                generator: torch.Generator | None = None, size_average: bool = True,
                relaxation: str = "paper", interval_weight: float = 0.0) -> tuple[Tensor, Tensor]:
    """Robust cross-entropy and robust error (Wong & Kolter; the paper's code ``robust_loss``).

    ``relaxation`` (exact bounds only, ``proj=None``): ``"adaptive"`` trains on CROWN's tighter faces, which
    are differentiable like the paper's; projections need the paper's relaxation.

    ``J`` is the lower bound (or, with ``proj``, the estimate) of ``f_y - f_j``; the loss is
    ``CE(-J, y)`` and the error the fraction of examples with some ``J_j <= 0`` (not certified).

    ``interval_weight`` ``w`` in [0, 1] trains on ``(1 - w) J + w J_IBP`` with the interval bound
    :meth:`DualNetwork.interval_lower_bound` (CROWN-IBP's mix, Zhang et al. 2020, whose ``beta`` is
    ``1 - w``); a convex combination of lower bounds is one. ``w = 1`` is IBP training and skips the dual
    pass, ``w = 0`` (the default) the paper's loss.

    ``net`` may be a torch module (as :class:`DualNetwork`); the loss's gradients reach its parameters. A
    parameter the ONNX export does not keep as it is (folded into another constant) cannot receive them:
    with gradients enabled that is an :class:`InvalidInputError`, never a loss that silently trains nothing.
    """
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise InvalidInputError("x must be a tensor of shape (batch, *input_shape)")
    module, net = net, as_network(net, x)
    if torch.is_grad_enabled() and module is not net:
        params = dict(module.named_parameters())
        lost = [name for name in getattr(net, "onnxdual_untied", ()) if params[name].requires_grad]
        if lost:
            raise InvalidInputError(f"robust_loss: gradients cannot reach parameter(s) {', '.join(lost[:3])} "
                                    "of the module: its ONNX export folds them into other constants; train "
                                    "the exported model instead (onnxdual.training.train takes the module)")
    with torch.no_grad():
        num_classes = net(x[:1]).flatten(1).shape[1]
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise InvalidInputError("y must hold one label per example")
    if (y < 0).any() or (y >= num_classes).any():
        raise InvalidInputError(f"labels must lie in [0, {num_classes - 1}]")
    if isinstance(interval_weight, bool) or not (0.0 <= float(interval_weight) <= 1.0):
        raise InvalidInputError(f"interval_weight must lie in [0, 1], got {interval_weight!r}")
    dual = DualNetwork(net, x, eps, norm, proj, clip=clip, generator=generator, relaxation=relaxation)
    c = margin_matrix(y, num_classes).to(x.dtype)
    w = float(interval_weight)
    # the dual pass is lazy: with w = 1 it never runs (and no projections are drawn)
    j = dual.estimate(c).value if w < 1 else 0
    if w > 0:
        j = (1 - w) * j + w * dual.interval_lower_bound(c)
    ce = F.cross_entropy(-j, y, reduction="mean" if size_average else "none")
    others = torch.ones_like(j, dtype=torch.bool)
    others[torch.arange(y.shape[0], device=y.device), y] = False
    not_certified = ((j <= 0) & others).any(1).to(x.dtype)
    err = not_certified.mean() if size_average else not_certified
    return ce, err
