"""Projected gradient descent: an upper bound on what certification can claim.

Every certified example must resist every attack; an example that is both certified and successfully
attacked is a soundness violation. PGD minimises ``min_j (c_j . f(x'))`` over the input set -- for
classification with ``C = e_y - e_j`` that is the smallest margin -- with sign-gradient steps for boxes and
normalised-gradient steps for l2 balls, with random restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from onnxdual.engine.input_sets import Box, InputSet


@dataclass(frozen=True)
class AttackResult:
    """Best point found per example and the objective there (``min_j c_j . f(x)``)."""

    x: Tensor
    value: Tensor


def _objective(net: nn.Module, x: Tensor, c: Tensor, mask: Tensor | None) -> Tensor:
    out = net(x).flatten(1)
    vals = torch.einsum("bmo,bo->bm", c, out)
    if mask is not None:
        vals = vals.masked_fill(~mask, float("inf"))
    return vals.min(1).values


def pgd(net: nn.Module, input_set: InputSet, c: Tensor, *, steps: int = 40, restarts: int = 1,
        step_size: float | None = None, mask: Tensor | None = None,
        generator: torch.Generator | None = None) -> AttackResult:
    """Minimise ``min_j c_j . f(x')`` over the input set (``c``: ``(B, m, n_out)``; ``mask`` selects rows).

    The first restart starts at the centre, the others at random points of the set."""
    center = input_set.center.detach()
    if isinstance(input_set, Box):
        scale = input_set.radius.detach()
    else:
        scale = torch.as_tensor(input_set.eps, dtype=center.dtype, device=center.device)
    alpha = step_size if step_size is not None else 2.5 / max(steps, 1)
    was_training = net.training
    net.eval()
    best_x = center.clone()
    with torch.no_grad():
        best = _objective(net, center, c, mask)
    try:
        for restart in range(restarts):
            if restart == 0:
                x = center.clone()
            else:
                x = input_set.sample(2, generator)[1].detach()
            for _ in range(steps):
                x.requires_grad_(True)
                value = _objective(net, x, c, mask)
                (grad,) = torch.autograd.grad(value.sum(), x)
                with torch.no_grad():
                    if isinstance(input_set, Box):
                        x = x - alpha * scale * grad.sign()
                    else:
                        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                        shape = (-1, *[1] * (grad.dim() - 1))
                        x = x - alpha * scale * grad / norms.reshape(shape)
                    x = input_set.project(x)
                    value = _objective(net, x, c, mask)
                    better = value < best
                    best = torch.where(better, value, best)
                    best_x[better] = x[better]
    finally:
        net.train(was_training)
    return AttackResult(best_x, best)
