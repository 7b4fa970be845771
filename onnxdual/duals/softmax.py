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
        return self._times(x, self.matrix.transpose(-1, -2))

    def transpose(self, nu: Tensor) -> Tensor:
        return self._times(nu, self.matrix)

    def _times(self, rows: Tensor, matrix: Tensor) -> Tensor:
        """``rows @ matrix`` per group: rows ``(Bx, K, *shape)`` as ``(B, G, K, n)``, one GEMM per example
        and group (not ``K`` vector products)."""
        g = self.layer.grouped(rows, 2).transpose(1, 2)  # (Bx, G, K, n)
        out = (g @ matrix).transpose(1, 2)  # (B, K, G, n)
        return self.layer.ungrouped(out, 2)


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

    def _composed(self, lo: Tensor, hi: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Softmax's faces as ``h(g)`` with ``h(t) = 1 / (1 + t)`` (convex, decreasing) and
        ``g = sum_{j != i} exp(x_j - x_i)`` (convex, each term convex in ``d_j = x_j - x_i``): above, the chord of
        ``h`` on ``[g_min, g_max]`` at ``g``'s tangent plane at the centre (``g >=`` tangent, the chord's slope
        is negative); below, ``h``'s tangent at the centre's value of the upper plane ``U`` of ``g`` made of
        each term's chord (``g <= U``, ``h' < 0``). Valid on the whole box, wide ones too; ``(matrix, offset)``
        per side, non-finite where an exponential overflows (the caller then keeps another enclosure)."""
        off = ~torch.eye(self.n, dtype=torch.bool, device=lo.device)
        c = (lo + hi) / 2
        dl, du, dc = (a.unsqueeze(-2) - b.unsqueeze(-1) for a, b in ((lo, hi), (hi, lo), (c, c)))  # [.., i, j]
        zero = torch.zeros_like(dl)
        e_l, e_u, e_c = (torch.where(off, d.exp(), zero) for d in (dl, du, dc))
        g_min, g_max = e_l.sum(-1), e_u.sum(-1)
        h = lambda t: 1.0 / (1.0 + t)
        width = g_max - g_min
        wide = width > 1e-6 * (1 + g_min)
        a = torch.where(wide, (h(g_max) - h(g_min)) / torch.where(wide, width, torch.ones_like(width)),
                        -h(g_min) ** 2)
        b = h(g_min) - a * g_min
        upper = self._plane(a.unsqueeze(-1) * e_c, b + a * (e_c * (1 - dc)).sum(-1))
        span = du - dl
        chord = torch.where(span > 1e-6, (e_u - e_l) / torch.where(span > 1e-6, span, torch.ones_like(span)), e_l)
        chord = torch.where(off, chord, zero)
        t0 = (torch.where(off, e_l - chord * dl, zero)).sum(-1) + (chord * dc).sum(-1)  # U at the centre
        slope = -h(t0) ** 2
        lower = self._plane(slope.unsqueeze(-1) * chord,
                            h(t0) + slope * ((torch.where(off, e_l - chord * dl, zero)).sum(-1) - t0))
        return lower, upper

    @staticmethod
    def _plane(coef: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
        """``sum_{j != i} coef_ij (x_j - x_i) + offset_i`` as a matrix (the diagonal takes minus the row sum)."""
        return coef - torch.diag_embed(coef.sum(-1)), offset

    def faces(self, lower: Tensor, upper: Tensor) -> Faces:
        jac, (t_lo, t_hi), (i_lo, i_hi) = self._enclosures(lower, upper)
        c = self.grouped((lower + upper) / 2, 1)
        at_c = (jac @ c.unsqueeze(-1)).squeeze(-1)  # the Taylor faces' linear part at the centre
        # per side, the enclosure best at the centre: Taylor, the interval (a zero row) or (Softmax) h(g)
        lo_rows, lo_off = jac * (at_c + t_lo > i_lo).unsqueeze(-1), torch.where(at_c + t_lo > i_lo, t_lo, i_lo)
        hi_rows, hi_off = jac * (at_c + t_hi < i_hi).unsqueeze(-1), torch.where(at_c + t_hi < i_hi, t_hi, i_hi)
        if not self.log:
            (m_lo, o_lo), (m_hi, o_hi) = self._composed(self.grouped(lower, 1), self.grouped(upper, 1))
            best_lo = torch.maximum(at_c + t_lo, i_lo)
            best_hi = torch.minimum(at_c + t_hi, i_hi)
            v_lo, v_hi = (m_lo @ c.unsqueeze(-1)).squeeze(-1) + o_lo, (m_hi @ c.unsqueeze(-1)).squeeze(-1) + o_hi
            use_lo = torch.isfinite(m_lo).all(-1) & torch.isfinite(o_lo) & (v_lo > best_lo)
            use_hi = torch.isfinite(m_hi).all(-1) & torch.isfinite(o_hi) & (v_hi < best_hi)
            lo_rows, lo_off = torch.where(use_lo.unsqueeze(-1), m_lo, lo_rows), torch.where(use_lo, o_lo, lo_off)
            hi_rows, hi_off = torch.where(use_hi.unsqueeze(-1), m_hi, hi_rows), torch.where(use_hi, o_hi, hi_off)
        zero = torch.zeros_like(c)
        low = GroupMap(self, lo_rows, self.ungrouped(lo_off, 1), self.ungrouped(zero, 1))
        high = GroupMap(self, hi_rows, self.ungrouped(zero, 1), self.ungrouped(hi_off, 1))
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
