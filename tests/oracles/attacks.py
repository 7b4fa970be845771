"""Upper bounds on ``min c . f(x')``: projected gradient descent and sampling.

Both are independent of the engine (they only run the network forward, and backward for gradients), so
any value they find is a real value of the network inside the set: a sound lower bound can never exceed it.

* :func:`pgd_minimize` -- boxes: sign-gradient steps, projection by clamping, random and vertex restarts.
* :func:`pgd_minimize_l2` -- l2 balls: normalised-gradient steps, projection onto the ball.
* :func:`sample_minimize` / :func:`sample_minimize_l2` -- uniform samples plus vertices (box) or points
  of the sphere (ball), evaluated by any batch function ``fn(points) -> outputs``.

``c`` is ``(n_out,)`` or ``(m, n_out)``; every row is minimised separately and the result has one value
per row (a float for a 1-D ``c``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn


def _rows(c) -> tuple[np.ndarray, bool]:
    c = np.asarray(c, dtype=np.float64)
    return (c[None], True) if c.ndim == 1 else (c, False)


def _out(values: np.ndarray, single: bool):
    return float(values[0]) if single else values


def _torch_values(net: nn.Module, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (net(x).reshape(x.shape[0], -1) * c).sum(1)


def _pgd(net: nn.Module, c, starts: torch.Tensor, step: Callable, project: Callable, steps: int,
         return_points: bool):
    """Shared loop: ``starts`` is ``(m, R, *in_shape)``; keeps the best value and point of every row."""
    rows, single = _rows(c)
    m, r = starts.shape[:2]
    in_shape = starts.shape[2:]
    cc = torch.as_tensor(rows, dtype=torch.float32).repeat_interleave(r, 0)  # (m * R, n_out)
    x = starts.reshape(m * r, *in_shape).clone()
    best = torch.full((m * r,), float("inf"))
    best_x = x.clone()
    was_training = net.training
    net.eval()
    try:
        for t in range(steps + 1):
            x.requires_grad_(True)
            with torch.enable_grad():
                values = _torch_values(net, x, cc)
                grad = torch.autograd.grad(values.sum(), x)[0] if t < steps else None
            values = values.detach()
            better = values < best
            best = torch.where(better, values, best)
            best_x[better] = x.detach()[better]
            if grad is None:
                break
            x = project(step(x.detach(), grad, t))
    finally:
        net.train(was_training)
    best = best.reshape(m, r)
    idx = best.argmin(1)
    values = best.min(1).values.double().numpy()
    if not return_points:
        return _out(values, single)
    points = best_x.reshape(m, r, *in_shape)[torch.arange(m), idx].double().numpy()
    return _out(values, single), (points[0] if single else points)


def pgd_minimize(net: nn.Module, c, box_lower, box_upper, steps: int = 40, restarts: int = 8, seed: int = 0,
                 *, return_points: bool = False):
    """Minimise ``c . f(x')`` over ``box_lower <= x' <= box_upper`` (arrays shaped like one example).

    Restart 0 starts at the centre, restart 1 at a random vertex, the others uniformly; steps are
    ``alpha_t * sign(grad)`` with ``alpha_t`` decaying geometrically from half the box width to 1/1000 of it
    (so that the iterates can settle on the kinks where piecewise-linear minima lie)."""
    gen = torch.Generator().manual_seed(seed)
    lo = torch.as_tensor(np.asarray(box_lower), dtype=torch.float32)
    hi = torch.as_tensor(np.asarray(box_upper), dtype=torch.float32)
    width = hi - lo
    m = _rows(c)[0].shape[0]
    u = torch.rand((m, restarts, *lo.shape), generator=gen)
    if restarts > 0:
        u[:, 0] = 0.5
    if restarts > 1:
        u[:, 1] = (torch.rand((m, *lo.shape), generator=gen) < 0.5).float()
    starts = lo + u * width

    decay = 0.002 ** (1.0 / max(steps - 1, 1))  # geometric: from half the width to 1/1000 of it

    def step(x, g, t):
        alpha = width * 0.5 * decay**t
        return x - alpha * torch.sign(g)

    def project(x):
        return torch.maximum(torch.minimum(x, hi), lo)

    return _pgd(net, c, starts, step, project, steps, return_points)


def pgd_minimize_l2(net: nn.Module, c, center, eps: float, steps: int = 40, restarts: int = 8, seed: int = 0,
                    *, return_points: bool = False):
    """Minimise ``c . f(x')`` over ``||x' - center||_2 <= eps``: normalised-gradient steps of length
    ``alpha_t`` decaying geometrically from ``eps`` to ``eps / 500``, then projection onto the ball.
    Restart 0 starts at the centre, half of the others on the sphere, the rest inside."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.as_tensor(np.asarray(center), dtype=torch.float32)
    m = _rows(c)[0].shape[0]
    d = torch.randn((m, restarts, *x0.shape), generator=gen)
    norms = d.flatten(2).norm(dim=2).clamp_min(1e-12).reshape(m, restarts, *[1] * x0.dim())
    radius = torch.where(torch.arange(restarts) % 2 == 1, 1.0, torch.rand(restarts, generator=gen))
    radius[0] = 0.0
    starts = x0 + d / norms * eps * radius.reshape(1, restarts, *[1] * x0.dim())

    decay = 0.002 ** (1.0 / max(steps - 1, 1))

    def step(x, g, t):
        alpha = eps * decay**t
        gn = g.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, *[1] * x0.dim())
        return x - alpha * g / gn

    def project(x):
        delta = x - x0
        n = delta.flatten(1).norm(dim=1).reshape(-1, *[1] * x0.dim())
        factor = torch.clamp(eps / n.clamp_min(1e-30), max=1.0)
        return x0 + delta * factor

    return _pgd(net, c, starts, step, project, steps, return_points)


def box_samples(lower, upper, n: int, seed: int = 0) -> np.ndarray:
    """``(n', *shape)`` points of the box: every vertex when there are at most ``n / 2`` of them (else
    ``n / 2`` random vertices), the centre, and uniform points."""
    rng = np.random.default_rng(seed)
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    d = lower.size
    if d <= 16 and 2**d <= n // 2:
        bits = ((np.arange(2**d)[:, None] >> np.arange(d)[None]) & 1).astype(np.float64)
    else:
        bits = (rng.random((n // 2, d)) < 0.5).astype(np.float64)
    t = np.concatenate([bits, np.full((1, d), 0.5), rng.random((n - len(bits) - 1, d))])
    return lower + t.reshape(-1, *lower.shape) * (upper - lower)


def ball_samples(center, eps: float, n: int, seed: int = 0) -> np.ndarray:
    """``(n', *shape)`` points of the l2 ball: the centre, ``center +/- eps e_i``, half of the rest on the
    sphere and half uniformly inside."""
    rng = np.random.default_rng(seed)
    center = np.asarray(center, dtype=np.float64)
    d = center.size
    axes = np.concatenate([np.eye(d), -np.eye(d)]) * eps
    k = max(n - 1 - 2 * d, 2)
    g = rng.standard_normal((k, d))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    r = np.where(np.arange(k) % 2 == 0, 1.0, rng.random(k) ** (1.0 / d))
    pts = np.concatenate([np.zeros((1, d)), axes, g * r[:, None] * eps])
    return center + pts.reshape(-1, *center.shape)


def _sample_minimize(fn: Callable[[np.ndarray], np.ndarray], c, points: np.ndarray, return_points: bool):
    rows, single = _rows(c)
    out = np.asarray(fn(points), dtype=np.float64).reshape(points.shape[0], -1)
    values = out @ rows.T  # (n, m)
    best = values.min(0)
    if not return_points:
        return _out(best, single)
    return _out(best, single), points


def sample_minimize(fn: Callable[[np.ndarray], np.ndarray], c, lower, upper, n: int = 256, seed: int = 0,
                    *, return_points: bool = False):
    """Smallest ``c . fn(x')`` over :func:`box_samples`; with ``return_points`` also the points."""
    return _sample_minimize(fn, c, box_samples(lower, upper, n, seed), return_points)


def sample_minimize_l2(fn: Callable[[np.ndarray], np.ndarray], c, center, eps: float, n: int = 256,
                       seed: int = 0, *, return_points: bool = False):
    """Smallest ``c . fn(x')`` over :func:`ball_samples`; with ``return_points`` also the points."""
    return _sample_minimize(fn, c, ball_samples(center, eps, n, seed), return_points)
