"""Random-projection columns of the AutoDual pass (Alg. 1, Theorem 2, App. D-E): drawing them, carrying the
columns of all sources as one stacked tensor, and turning them into norm estimates.

**Stacking.** Every source (the input set, each activation's relaxation gap) contributes ``r`` columns.
Pushing each source's columns through every later layer as its own batched call costs one call per source
per layer; the columns of all sources are instead kept side by side in one ``(Bt, S * r, *shape)`` tensor
(block ``i`` holds source ``blocks[i]``), so each layer is one call on ``Bt * S * r`` images. The values
are those of the separate calls (each column is its own image).

**Median estimator** (eq. 12-13). ``median_i |x_i|`` over the ``r`` columns of a block, with the lower
middle value for even ``r`` (as :func:`torch.median`). It is selected by a pruned sorting network of
element-wise minima and maxima over the ``r`` column slices (``O(r log^2 r)`` comparisons of
``(Bt, S, n)`` slices), which is many times faster on CPU than :func:`torch.median` along a middle axis
for the small ``r`` of training; its value is exactly :func:`torch.median`'s. The gradient reaches the
selected entry only (as the paper notes: "the gradient need only propagate through the median entries").

**Tail bounds** (App. E): the geometric / root-mean-square upper bounds of
:mod:`onnxdual.engine.tail_bounds`, per block.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from onnxdual.engine.tail_bounds import TailBound

#: above this many columns per block the sorting network has more comparisons than ``torch.median`` costs
NETWORK_MAX_COLUMNS = 64


def cauchy(size: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard Cauchy samples ``tan(pi (U - 1/2))``, one matrix shared by the batch: each example's
    estimate is still a median over independent projections (Theorem 2), and drawing ``(1, r, n)``
    instead of ``(B, r, n)`` makes sampling negligible. ``U`` is drawn in float64: its float32 grid would
    put an atom at exactly 0, which a geometric mean (App. E) cannot absorb."""
    u = torch.rand((1, *size[1:]), generator=generator, dtype=torch.float64,
                   device=generator.device if generator is not None else like.device).to(like.device)
    return torch.tan(torch.pi * (u - 0.5)).to(like.dtype)


@functools.lru_cache(maxsize=None)
def selection_network(r: int, k: int) -> tuple[tuple[int, int], ...]:
    """Compare-exchange pairs ``(i, j)`` (``i < j``: the minimum goes to ``i``) that bring the ``k``-th
    smallest (0-based) of ``r`` values to position ``k``: Batcher's odd-even merge sort on the next power
    of two (comparisons with the missing top positions, +inf, are no-ops and dropped), pruned to the
    comparisons position ``k`` depends on."""
    size = 1
    while size < r:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        step = p
        while step >= 1:
            for j in range(step % p, size - step, 2 * step):
                for i in range(min(step, size - j - step)):
                    if (i + j) // (2 * p) == (i + j + step) // (2 * p):
                        pairs.append((i + j, i + j + step))
            step //= 2
        p *= 2
    needed, kept = {k}, []
    for i, j in reversed([(i, j) for i, j in pairs if j < r]):
        if i in needed or j in needed:
            kept.append((i, j))
            needed |= {i, j}
    return tuple(reversed(kept))


def _select(values: Tensor, k: int) -> Tensor:
    """The ``k``-th smallest (0-based) along dimension -2 of ``values``."""
    slices = list(values.unbind(-2))
    for i, j in selection_network(values.shape[-2], k):
        slices[i], slices[j] = torch.minimum(slices[i], slices[j]), torch.maximum(slices[i], slices[j])
    return slices[k]


class _MedianAbs(torch.autograd.Function):
    """``median |x|`` along dimension -2 (lower middle for even counts); the gradient goes to the entries
    equal to the median (with continuous Cauchy columns: exactly one, almost surely; a block of zeros gets
    none, as ``d|x|/dx = 0`` at 0)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102 (autograd protocol)
        value = _select(x.abs(), (x.shape[-2] - 1) // 2)
        ctx.save_for_backward(x, value)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102 (autograd protocol)
        x, value = ctx.saved_tensors
        value = value.unsqueeze(-2)
        grad = torch.where(value > 0, grad.unsqueeze(-2), 0)  # d|x|/dx is taken as 0 at 0 (as torch.abs)
        return torch.where(x == value, grad, torch.where(x == -value, -grad, 0))


def median_abs(x: Tensor) -> Tensor:
    """``median |x|`` along dimension -2 (eq. 12), equal to ``x.abs().median(-2).values``."""
    if x.shape[-2] > NETWORK_MAX_COLUMNS:
        return x.abs().median(dim=-2).values
    return _MedianAbs.apply(x)


def block_norms(flat: Tensor, norms: list[str], columns: int, tail: TailBound | None = None) -> Tensor:
    """Sum over the blocks of ``flat`` ``(Bt, S * columns, n)`` of each unit's estimated dual norm: the
    median of absolute values (l1, eq. 12-13) or the root mean square (l2) of the block's columns, or with
    ``tail`` a high-probability upper bound (App. E). ``norms[i]`` is block ``i``'s norm. Returns
    ``(Bt, n)``."""
    blocks = flat.reshape(flat.shape[0], len(norms), columns, flat.shape[-1])
    total = None
    start = 0
    while start < len(norms):  # runs of blocks with the same norm are estimated together
        stop = start
        while stop < len(norms) and norms[stop] == norms[start]:
            stop += 1
        part = blocks[:, start:stop]
        if tail is not None:
            value = _tail_norm(part, norms[start], tail)
        elif norms[start] == "l1":
            value = median_abs(part)
        else:
            value = part.pow(2).mean(dim=2).sqrt()
        value = value.sum(1)
        total = value if total is None else total + value
        start = stop
    return total


def _tail_norm(blocks: Tensor, norm: str, tail: TailBound) -> Tensor:
    """High-probability upper bound of each unit's norm from ``k * m`` projected columns per block (App. E):
    the largest over ``m`` groups of the scaled geometric mean (l1) or root mean square (l2) of ``k``
    columns. Computed in float64 so that the logarithms of tiny columns lose nothing. Returns
    ``(Bt, S, n)``."""
    groups = blocks.double().reshape(*blocks.shape[:2], tail.m, tail.k, blocks.shape[-1])
    if norm == "l1":
        per_group = groups.abs().log().mean(dim=3).exp() * tail.l1_factor
    else:
        per_group = groups.pow(2).mean(dim=3).sqrt() * tail.l2_factor
    return per_group.amax(dim=2).to(blocks.dtype)


def batched(t: Tensor) -> Tensor:
    """``(Bt, K, *shape)`` columns as one batch of ``Bt * K`` images (a channels-last layout was measured
    and gained nothing on the paper's networks)."""
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def stack(parts: list[Tensor | None], blocks: list[tuple[int, ...]], union: tuple[int, ...], columns: int,
          ) -> list[Tensor | None]:
    """Each part's stacked columns laid out on the blocks ``union`` (zero columns for the sources a part
    does not depend on) and expanded to the largest leading size, so that a multi-input layer sees every
    source at the same place in each input."""
    present = [t for t in parts if t is not None]
    bt = max(t.shape[0] for t in present)
    out: list[Tensor | None] = []
    for t, own in zip(parts, blocks):
        if t is None:
            out.append(None)
            continue
        t = t.expand(bt, *t.shape[1:])
        if own != union:
            zeros = t.new_zeros((bt, columns, *t.shape[2:]))
            pieces = [t[:, own.index(s) * columns:(own.index(s) + 1) * columns] if s in own else zeros
                      for s in union]
            t = torch.cat(pieces, 1)
        out.append(t)
    return out
