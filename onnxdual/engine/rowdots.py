"""Per-row dot products of dual rows with per-example vectors -- the ``nu^T b`` and ``|nu|^T r`` terms of the
dual objective (eq. 7, 10): an input set's centre and radius, an activation's relaxation midpoint and
half-width, a layer's offset.

As ``bmm(nu, v)`` with ``v`` of shape ``(B, n, 1)``, autograd would form the gradient in ``nu`` as a batched
matrix product of inner size 1 (an outer product ``g v^T``), which on the CPU costs many times a broadcast
product of the same size; the rows' duals are the largest tensors of a pass, so this took a large share of a
training step's and an optimised bound's backward. :func:`row_terms` writes that gradient as broadcast
products into one new tensor. Same values; the gradient to rounding (one fused multiply-add)."""

from __future__ import annotations

import torch
from torch import Tensor


def row_terms(flat: Tensor, c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """``(nu . c, |nu| . r)`` per row, ``(B, m)`` each, for ``flat`` ``(B, m, n)`` and ``c``, ``r``
    ``(B or 1, n)``; rows of batch 1 against vectors of batch ``B`` broadcast too."""
    c, r = c.unsqueeze(-1), r.unsqueeze(-1)
    if flat.shape[0] < max(c.shape[0], r.shape[0]):  # one set of rows for a batch of boxes: plain products
        return (flat @ c).squeeze(-1), (flat.abs() @ r).squeeze(-1)
    return _RowTerms.apply(flat, c, r)


def row_dot(flat: Tensor, c: Tensor) -> Tensor:
    """``nu . c`` per row, ``(B, m)``, for ``flat`` ``(B, m, n)`` and ``c`` ``(B or 1, n)`` (or the reverse)."""
    c = c.unsqueeze(-1)
    if flat.shape[0] < c.shape[0]:
        return (flat @ c).squeeze(-1)
    return _RowDot.apply(flat, c)


def _summed_to(grad: Tensor, like: Tensor) -> Tensor:
    """The gradient of a ``like`` broadcast along the batch: summed over it."""
    return grad.sum(0, keepdim=True) if like.shape[0] != grad.shape[0] else grad


class _RowTerms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, flat: Tensor, c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(flat, c, r)
        return (flat @ c).squeeze(-1), (flat.abs() @ r).squeeze(-1)

    @staticmethod
    def backward(ctx, g_lin: Tensor | None, g_spread: Tensor | None):
        flat, c, r = ctx.saved_tensors
        grad_flat = grad_c = grad_r = None
        if ctx.needs_input_grad[0]:
            if g_spread is not None:  # d|nu|/dnu = sign(nu), 0 at 0 (as abs's own gradient)
                grad_flat = flat.sign().mul_(r.transpose(1, 2)).mul_(g_spread.unsqueeze(-1))
                if g_lin is not None:
                    grad_flat.addcmul_(g_lin.unsqueeze(-1), c.transpose(1, 2))
            elif g_lin is not None:
                grad_flat = g_lin.unsqueeze(-1) * c.transpose(1, 2)
        if ctx.needs_input_grad[1] and g_lin is not None:
            grad_c = _summed_to(flat.transpose(1, 2) @ g_lin.unsqueeze(-1), c)
        if ctx.needs_input_grad[2] and g_spread is not None:
            grad_r = _summed_to(flat.abs().transpose(1, 2) @ g_spread.unsqueeze(-1), r)
        return grad_flat, grad_c, grad_r


class _RowDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, flat: Tensor, c: Tensor) -> Tensor:
        ctx.save_for_backward(flat, c)
        return (flat @ c).squeeze(-1)

    @staticmethod
    def backward(ctx, g: Tensor):
        flat, c = ctx.saved_tensors
        grad_flat = g.unsqueeze(-1) * c.transpose(1, 2) if ctx.needs_input_grad[0] else None
        grad_c = _summed_to(flat.transpose(1, 2) @ g.unsqueeze(-1), c) if ctx.needs_input_grad[1] else None
        return grad_flat, grad_c


__all__ = ["row_terms", "row_dot"]
