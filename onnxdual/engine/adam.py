"""Adam steps for the engine's own small ascents (the optimised relaxation's face parameters, branch and
bound's per-domain slopes and multipliers).

The update is torch.optim.Adam's (Kingma & Ba 2015, no weight decay, no amsgrad) followed by an
exponential step-size decay (torch.optim.lr_scheduler.ExponentialLR), step for step the same arithmetic.
It is written out because creating any torch optimiser imports ``torch._dynamo`` (about 1.7 s of CPU, once
per process), which a one-instance ``verify`` or a short ``certify`` would pay for a few dozen steps on a
handful of tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor


class Adam:
    """Adam on ``params`` (tensors whose ``.grad`` the caller sets), step size ``lr`` multiplied by
    ``decay`` after every step."""

    def __init__(self, params: Iterable[Tensor], lr: float, decay: float = 1.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.decay, self.betas, self.eps = float(lr), float(decay), betas, eps
        self.steps = 0
        self._first = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self._second = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self._scratch: list[Tensor | None] = [None] * len(self.params)  # each step's denominator, reused

    @torch.no_grad()
    def step(self, mask: Tensor | None = None) -> None:
        """One update of every parameter with a gradient, then the step-size decay. ``mask`` (0/1,
        broadcastable to every parameter): where it is 0, parameters and moments stay as they are (e.g. a
        branch-and-bound domain already proven keeps its parameters, as it would alone)."""
        self.steps += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1 ** self.steps)
        correction2 = math.sqrt(1 - beta2 ** self.steps)
        for i, (p, first, second) in enumerate(zip(self.params, self._first, self._second)):
            if p.grad is None:
                continue
            grad = p.grad
            if mask is None:
                first.lerp_(grad, 1 - beta1)
                second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                p.addcdiv_(first, self._denominator(i, second, correction2), value=-step_size)
                continue
            first.add_(mask * (1 - beta1) * (grad - first))
            second.add_(mask * (1 - beta2) * (grad * grad - second))
            p.add_(mask * (-step_size) * first / self._denominator(i, second, correction2))
        self.lr *= self.decay

    def _denominator(self, i: int, second: Tensor, correction2: float) -> Tensor:
        # sqrt(v_hat) + eps. The second moment is raised to the smallest normal number first: on x86 the
        # square root of zeros and subnormals (parameters without gradient, tiny gradients squared) takes a
        # slow path, ~10x the time of the whole update; below that floor the root (< 1.1e-19 in float32)
        # vanishes against eps = 1e-8 when the two are added, so the step is the same. Computed into one
        # buffer per parameter, kept between steps (a fresh tensor of a parameter's size per step costs
        # more in page faults than the arithmetic).
        scratch = self._scratch[i]
        if scratch is None or scratch.shape != second.shape or scratch.dtype != second.dtype:
            scratch = self._scratch[i] = torch.empty_like(second)
        torch.clamp_min(second, torch.finfo(second.dtype).tiny, out=scratch)
        return scratch.sqrt_().div_(correction2).add_(self.eps)


__all__ = ["Adam"]
