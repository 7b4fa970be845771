"""The public dual network: ``DualNetwork(net, x, eps)`` and ``robust_loss`` (as in the paper's code).

Building is separate from computing: the constructor only records the problem; the AutoDual pass runs on
the first call that needs it, in chunks of examples that fit a memory budget.

A *bound* and an *estimate* are different types. :meth:`DualNetwork.lower_bound` only exists for exact
dual networks and returns a sound lower bound; with random projections (``proj=r``) the network offers
:meth:`DualNetwork.estimate`, whose :class:`Estimate` result can never be mistaken for a certificate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onnxdual.duals.base import ActivationDual
from onnxdual.engine.autodual import PassResult, forward_pass, objective
from onnxdual.engine.build import BuiltDual, build_dual
from onnxdual.engine.input_sets import InputSet, make_input_set
from onnxdual.errors import InvalidInputError

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


class DualNetwork:
    """The dual network of ``net`` around inputs ``x`` (Theorem 1).

    Args:
        net: a network from :func:`onnxdual.load`.
        x: inputs ``(B, *in_shape)``; the device of ``x`` is where everything is computed.
        eps: radius of the perturbation ball: a float, or for ``norm="linf"`` a tensor broadcastable to
            ``x`` (per-coordinate radii, e.g. a VNN-LIB box as centre ``x`` and radii ``eps``).
        norm: ``"linf"`` or ``"l2"``.
        proj: ``None`` for exact bounds, or the number ``r`` of random projections (Alg. 1) for estimates.
        clip: optional data domain ``(lo, hi)`` intersected with an l-inf ball (e.g. pixels in ``(0, 1)``).
        generator: random generator for the projections (reproducible runs).
        memory_budget: bytes the exact pass may use; examples are processed in chunks that fit.
    """

    def __init__(self, net: nn.Module, x: Tensor, eps: float | Tensor, norm: str = "linf",
                 proj: int | None = None, *, clip: tuple[float, float] | None = None,
                 generator: torch.Generator | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET):
        if proj is not None and (isinstance(proj, bool) or not isinstance(proj, int) or proj < 1):
            raise InvalidInputError(f"proj must be None or a positive number of projections, got {proj!r}")
        if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
            raise InvalidInputError("x must be a floating-point tensor of shape (batch, *input_shape)")
        self.net = net
        self.x = x
        self.input_set: InputSet = make_input_set(x, eps, norm, clip)
        self.norm = norm
        self.proj = proj
        self.generator = generator
        self.memory_budget = memory_budget
        self._built: BuiltDual | None = None
        self._passes: list[tuple[slice, PassResult]] | None = None

    # -- building -------------------------------------------------------------------------------------
    @property
    def built(self) -> BuiltDual:
        if self._built is None:
            self._built = build_dual(self.net, self.x)
            if self._built.input_shape != self.x.shape[1:]:
                raise InvalidInputError(f"inputs of shape {tuple(self.x.shape[1:])} do not fit the network")
        return self._built

    def chunk_size(self) -> int:
        """Examples per exact pass so that the largest forward term fits the memory budget."""
        if self.proj is not None:
            return self.x.shape[0]
        # mirror the forward phase of the pass: columns grow with each activation until the pass turns
        # backward (at the first activation with fewer units than columns; see forward_pass)
        columns = self.x[0].numel()
        largest = columns * columns
        for step in self.built.steps:
            units = math.prod(step.output_shape)
            largest = max(largest, columns * units)
            if isinstance(step.layer, ActivationDual):
                if units < columns:
                    break
                columns += units  # the new gap columns are shared by the batch: they count once below
        per_example = 4 * largest * self.x.element_size()  # a term, its image, |.| and slack
        return max(1, min(self.x.shape[0], self.memory_budget // max(per_example, 1)))

    # -- computing -------------------------------------------------------------------------------------
    def _ensure_pass(self) -> list[tuple[slice, PassResult]]:
        if self._passes is None:
            built, step = self.built, self.chunk_size()
            self._passes = []
            for start in range(0, self.x.shape[0], step):
                index = slice(start, min(start + step, self.x.shape[0]))
                self._passes.append((index, forward_pass(built, self.input_set.chunk(index), self.proj,
                                                         self.generator, self.memory_budget)))
        return self._passes

    def _objective(self, c: Tensor) -> Tensor:
        out_shape = self.built.output_shape
        if c.dim() != 3 or c.shape[0] != self.x.shape[0] or c.shape[2] != math.prod(out_shape):
            raise InvalidInputError(f"C must have shape (batch={self.x.shape[0]}, m, n_out="
                                    f"{math.prod(out_shape)}), got {tuple(c.shape)}")
        c = c.to(self.x.dtype)
        parts = []
        for index, result in self._ensure_pass():
            ci = c[index].reshape(c[index].shape[0], c.shape[1], *out_shape)
            parts.append(objective(self.built, self.input_set.chunk(index), result.relaxations, ci))
        return torch.cat(parts)

    def lower_bound(self, c: Tensor) -> Tensor:
        """Sound lower bound of ``C f(x')`` over the input set: ``(B, m)`` for ``C`` of shape ``(B, m, n_out)``."""
        if self.proj is not None:
            raise TypeError("a DualNetwork with random projections gives estimates, not bounds: "
                            "use .estimate(C), or proj=None for a certificate")
        return self._objective(c)

    def estimate(self, c: Tensor) -> Estimate:
        """The dual objective with projected intermediate bounds (training); exact if ``proj`` is None."""
        return Estimate(self._objective(c), self.proj or 0)

    def bounds(self) -> dict[str, IntervalBounds]:
        """Pre-activation bounds of every activation's input, keyed by the activation node's name
        (exact networks only)."""
        if self.proj is not None:
            raise TypeError("pre-activation bounds of a projected network are estimates, not bounds")
        merged: dict[str, IntervalBounds] = {}
        passes = self._ensure_pass()
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
                generator: torch.Generator | None = None, size_average: bool = True) -> tuple[Tensor, Tensor]:
    """Robust cross-entropy and robust error (Wong & Kolter; the paper's code ``robust_loss``).

    ``J`` is the lower bound (or, with ``proj``, the estimate) of ``f_y - f_j``; the loss is
    ``CE(-J, y)`` and the error the fraction of examples with some ``J_j <= 0`` (not certified).
    """
    with torch.no_grad():
        num_classes = net(x[:1]).flatten(1).shape[1]
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise InvalidInputError("y must hold one label per example")
    if (y < 0).any() or (y >= num_classes).any():
        raise InvalidInputError(f"labels must lie in [0, {num_classes - 1}]")
    dual = DualNetwork(net, x, eps, norm, proj, clip=clip, generator=generator)
    c = margin_matrix(y, num_classes).to(x.dtype)
    j = dual.estimate(c).value
    ce = F.cross_entropy(-j, y, reduction="mean" if size_average else "none")
    others = torch.ones_like(j, dtype=torch.bool)
    others[torch.arange(y.shape[0]), y] = False
    not_certified = ((j <= 0) & others).any(1).to(x.dtype)
    err = not_certified.mean() if size_average else not_certified
    return ce, err
