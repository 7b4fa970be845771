"""Dual layers of ``Softmax`` and ``LogSoftmax`` (every opset: from 13 one axis, before 13 the input
flattened from ``axis`` on), as dedicated relaxations of one variable input (not element-wise).

Per softmax group with input box ``c +/- r`` and ``R = max_j r_j``, two sound enclosures per output unit,
the narrower taken (per side for the separate faces, judged at the centre):

* **Taylor.** ``s_i(x) = s_i(c) + J_i (x - c) + h^T H_i(xi) h / 2`` (mean-value form, ``xi`` in the box,
  ``h = x - c``, ``J = diag(s) - s s^T``). Expanding ``H_i`` gives ``h^T H_i h = s_i [(h_i - s.h)^2 -
  Var_s(h)]`` with ``Var_s(h) = sum_j s_j h_j^2 - (s.h)^2`` in ``[0, R^2]``, so the remainder lies in
  ``[-smax_i R^2 / 2, smax_i (r_i + R)^2 / 2]`` with ``smax_i`` the interval bound of ``s_i`` on the box.
* **Interval.** ``s_i`` increases in ``x_i`` and decreases in every other input, so its extremes over the box
  are at ``(l_i, u_{-i})`` and ``(u_i, l_{-i})``: a constant face (``A`` row 0).

``LogSoftmax_i = x_i - LSE(x)`` with ``LSE`` convex: the tangent at ``c`` is below it and the tangent plus
``Var_s(h) / 2 <= min(R^2, sum_j smax_j r_j^2) / 2`` above, so ``x_i - s(c).x`` with an interval of that width;
or the interval ``[log smin_i, log smax_i]``. Both maps are the Jacobian at the centre with some rows zero,
one linear map per face, so the paper's dual, forward columns and projections apply unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from onnxdual.duals.base import ActivationDual, Faces, LinearRelaxation, NodeContext, RelaxationFace


class GroupMap(LinearRelaxation):
    """``A x`` with one ``n x n`` matrix per softmax group: ``matrix`` is ``(B, G, n, n)``, applied along the
    group's axis; ``low``, ``high`` of the input's shape."""

    def __init__(self, layer: "SoftmaxDual", matrix: Tensor, low: Tensor, high: Tensor):
        self.layer, self.matrix, self.low, self.high = layer, matrix, low, high

    def apply(self, x: Tensor) -> Tensor:
        g = self.layer.grouped(x, 2)  # (Bx, K, G, n)
        out = (g.unsqueeze(-2) @ self.matrix.unsqueeze(1).transpose(-1, -2)).squeeze(-2)
        return self.layer.ungrouped(out, 2)

    def transpose(self, nu: Tensor) -> Tensor:
        g = self.layer.grouped(nu, 2)
        return self.layer.ungrouped((g.unsqueeze(-2) @ self.matrix.unsqueeze(1)).squeeze(-2), 2)


class SoftmaxDual(ActivationDual):
    """``Softmax`` (``log=False``) or ``LogSoftmax`` (``log=True``) of one variable input."""

    def __init__(self, ctx: NodeContext, log: bool):
        super().__init__(ctx)
        self.log = log
        shape = tuple(ctx.input_shapes[0])
        default = -1 if ctx.opset >= 13 else 1
        axis = int(ctx.attributes.get("axis", default)) % (len(shape) + 1)
        if axis == 0:
            raise ctx.unsupported("a softmax over the batch axis")
        p = axis - 1
        self.shape = shape
        self.pre = math.prod(shape[:p])
        if ctx.opset >= 13:
            self.n, self.post = shape[p], math.prod(shape[p + 1:])
        else:  # before opset 13 the input is flattened to 2-d at axis
            self.n, self.post = math.prod(shape[p:]), 1

    def grouped(self, t: Tensor, lead: int) -> Tensor:
        """``(*lead, *shape)`` -> ``(*lead, groups, n)``."""
        head = t.shape[:lead]
        t = t.reshape(*head, self.pre, self.n, self.post).transpose(-1, -2)
        return t.reshape(*head, self.pre * self.post, self.n)

    def ungrouped(self, t: Tensor, lead: int) -> Tensor:
        head = t.shape[:lead]
        return t.reshape(*head, self.pre, self.post, self.n).transpose(-1, -2).reshape(*head, *self.shape)

    def _interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """Grouped ``(B, G, n)`` bounds -> ``log smin``, ``log smax`` per unit (the extremes at the corners)."""
        eye = torch.eye(self.n, dtype=torch.bool, device=lo.device)
        worst = torch.where(eye, lo.unsqueeze(-1), hi.unsqueeze(-2))  # row i: l_i at i, u_j elsewhere
        best = torch.where(eye, hi.unsqueeze(-1), lo.unsqueeze(-2))
        return lo - torch.logsumexp(worst, -1), hi - torch.logsumexp(best, -1)

    def _enclosures(self, lower: Tensor, upper: Tensor):
        """Per unit (grouped): the Jacobian at the centre, the Taylor enclosure's offsets ``(low, high)`` in
        ``J x + offset``, and the interval ``(low, high)``."""
        lo, hi = self.grouped(lower, 1), self.grouped(upper, 1)
        c, r = (lo + hi) / 2, (hi - lo) / 2
        big_r = r.amax(-1, keepdim=True)
        log_min, log_max = self._interval(lo, hi)
        s = torch.softmax(c, -1)
        smax = log_max.exp()
        sc = (s * c).sum(-1, keepdim=True)
        if self.log:  # x_i - LSE(c) - s.(x - c) - [0, q]
            eye = torch.eye(self.n, dtype=c.dtype, device=c.device)
            jac = eye - s.unsqueeze(-2)  # row i: e_i - s
            base = -torch.logsumexp(c, -1, keepdim=True) + sc
            q = 0.5 * torch.minimum(big_r.squeeze(-1) ** 2, (smax * r * r).sum(-1)).unsqueeze(-1)
            taylor = (base - q).expand_as(c), base.expand_as(c)
            return jac, taylor, (log_min, log_max)
        jac = torch.diag_embed(s) - s.unsqueeze(-1) * s.unsqueeze(-2)
        base = s - (jac @ c.unsqueeze(-1)).squeeze(-1)
        taylor = base - 0.5 * smax * big_r ** 2, base + 0.5 * smax * (r + big_r) ** 2
        return jac, taylor, (log_min.exp(), smax)

    def _map(self, jac: Tensor, keep: Tensor, low: Tensor, high: Tensor) -> GroupMap:
        return GroupMap(self, jac * keep.unsqueeze(-1), self.ungrouped(low, 1), self.ungrouped(high, 1))

    def relax(self, lower: Tensor, upper: Tensor) -> GroupMap:
        jac, (t_lo, t_hi), (i_lo, i_hi) = self._enclosures(lower, upper)
        keep = (t_hi - t_lo) < (i_hi - i_lo)
        low, high = torch.where(keep, t_lo, i_lo), torch.where(keep, t_hi, i_hi)
        return self._map(jac, keep.to(jac.dtype), low, torch.maximum(low, high))

    def faces(self, lower: Tensor, upper: Tensor) -> Faces:
        jac, (t_lo, t_hi), (i_lo, i_hi) = self._enclosures(lower, upper)
        c = self.grouped((lower + upper) / 2, 1)
        at_c = (jac @ c.unsqueeze(-1)).squeeze(-1)  # the Taylor faces' linear part at the centre
        keep_lo, keep_hi = at_c + t_lo > i_lo, at_c + t_hi < i_hi
        low = self._map(jac, keep_lo.to(jac.dtype), torch.where(keep_lo, t_lo, i_lo), torch.zeros_like(c))
        high = self._map(jac, keep_hi.to(jac.dtype), torch.zeros_like(c), torch.where(keep_hi, t_hi, i_hi))
        return Faces(RelaxationFace(low, low.low), RelaxationFace(high, high.high))

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        log_min, log_max = self._interval(self.grouped(lower, 1), self.grouped(upper, 1))
        if not self.log:
            log_min, log_max = log_min.exp(), log_max.exp()
        return self.ungrouped(log_min, 1), self.ungrouped(log_max, 1)


def softmax_dual(ctx: NodeContext) -> SoftmaxDual:
    """``Softmax`` / ``LogSoftmax`` of one variable input."""
    if ctx.variable_positions != (0,):
        raise ctx.unsupported("the softmax input must be the one that depends on the network input")
    return SoftmaxDual(ctx, log=ctx.op_type == "LogSoftmax")
