"""The dual layer of ``Where(cond, x, y)``: selection by a condition that may depend on the network input
(or be a constant, such as an attention mask).

``cond`` arrives as 0/1 values (a comparison or a Cast to BOOL before it, :mod:`onnxdual.duals.steps`).
Element by element:

* where ``cond`` is surely 1 (its lower bound is 1) the output *is* ``x``, and where it is surely 0 it is
  ``y``: there the relaxation is that input itself (slope 1, exact), or its value if it is a constant;
* elsewhere the output is one of the two: the relaxation is the interval hull ``[min(l_x, l_y),
  max(u_x, u_y)]`` (slope 0).

Sound by construction: every output value of the box is ``x`` or ``y`` at the same input, within the hull,
and equal to the selected input where the condition cannot change. One map serves both sides, so the paper's
relaxation, separate faces (the same ones) and projections all apply."""

from __future__ import annotations

import torch
from torch import Tensor

from onnxdual.duals.base import LinearRelaxation, NodeContext
from onnxdual.duals.multi import Bounds, MultiInputActivation, PlanesRelaxation


class WhereDual(MultiInputActivation):
    """``Where(cond, x, y)`` with any of its inputs depending on the network input (see the module docstring;
    a constant condition makes it an exact selection)."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        self.out_shape = tuple(ctx.output_shape)

    def _broadcast(self, t: Tensor, batch: int) -> Tensor:
        """``(B or 1, *shape)`` -> ``(B, *out_shape)``, numpy broadcasting aligned on the right."""
        missing = len(self.out_shape) - (t.dim() - 1)
        t = t.reshape(t.shape[0], *([1] * missing), *t.shape[1:])
        return t.expand(batch, *self.out_shape)

    def _inputs(self, lowers: Bounds, uppers: Bounds) -> list[tuple[Tensor, Tensor]]:
        """(lower, upper) of cond, x, y broadcast to the output, constants as both bounds."""
        given = dict(zip(self.ctx.variable_positions, zip(lowers, uppers)))
        like = lowers[0]
        out = []
        for position in range(3):
            lo, hi = given.get(position, (None, None))
            if lo is None:  # a constant: its per-example value, with a batch dimension of 1
                value = self.ctx.constant(position).to(like.dtype).to(like.device)
                lo = hi = value.reshape(1, *value.shape[max(0, value.dim() - len(self.out_shape)):])
            out.append(tuple(self._broadcast(t, like.shape[0]) for t in (lo, hi)))
        return out

    def _select(self, lowers: Bounds, uppers: Bounds):
        (c_lo, c_hi), (lx, ux), (ly, uy) = self._inputs(lowers, uppers)
        true, false = c_lo >= 0.5, c_hi < 0.5  # the condition's values are 0 and 1
        return true, false, (lx, ux), (ly, uy)

    def relax_inputs(self, lowers: Bounds, uppers: Bounds) -> LinearRelaxation:
        true, false, (lx, ux), (ly, uy) = self._select(lowers, uppers)
        positions = self.ctx.variable_positions
        chosen = (torch.zeros_like(true), true, false)  # cond never passes through; x where true, y where false
        slopes = tuple(chosen[p].to(lx.dtype) for p in positions)
        low, high = torch.minimum(lx, ly), torch.maximum(ux, uy)
        # a selected variable input enters through its slope (offset 0); a selected constant is its value
        x_off = torch.zeros_like(lx) if 1 in positions else lx
        y_off = torch.zeros_like(ly) if 2 in positions else ly
        low = torch.where(true, x_off, torch.where(false, y_off, low))
        high = torch.where(true, x_off, torch.where(false, y_off, high))
        return PlanesRelaxation(self.packing, slopes, low, high)

    def interval_inputs(self, lowers: Bounds, uppers: Bounds) -> tuple[Tensor, Tensor]:
        true, false, (lx, ux), (ly, uy) = self._select(lowers, uppers)
        low = torch.where(true, lx, torch.where(false, ly, torch.minimum(lx, ly)))
        high = torch.where(true, ux, torch.where(false, uy, torch.maximum(ux, uy)))
        return low, high


def where_dual(ctx: NodeContext) -> WhereDual:
    return WhereDual(ctx)
