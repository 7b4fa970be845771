"""ReLU's closed-form gap rule (:meth:`ReluDual._gaps`) gives exactly what the generic candidate rule of
:class:`ElementwiseActivation` gives -- values and gradients in the slope, ties included (stable units,
intervals ending at the kink, degenerate intervals, slopes at the ends of ``[0, 1]`` and outside it)."""

from __future__ import annotations

import pytest
import torch

from onnxdual.duals.base import ElementwiseActivation
from onnxdual.duals.relu import ReluDual


@pytest.mark.parametrize("side", [0, 1])
@pytest.mark.parametrize("seed", range(3))
def test_closed_form_gaps_equal_the_generic_rule(seed, side):
    gen = torch.Generator().manual_seed(seed)
    n = 3000
    lower = torch.randn(n, generator=gen, dtype=torch.float64) * 2
    upper = lower + torch.rand(n, generator=gen, dtype=torch.float64) * 3
    lower[:200], upper[200:400], upper[400:600] = 0.0, 0.0, lower[400:600]
    slope = (torch.rand(n, generator=gen, dtype=torch.float64) * 1.6 - 0.3)
    slope[::5], slope[::7] = 0.0, 1.0
    slope.requires_grad_(True)
    relu = ReluDual.__new__(ReluDual)
    ElementwiseActivation.__init__(relu, None, fn=torch.relu, kinks=(0.0,))
    generic = ElementwiseActivation._gaps(relu, slope, lower, upper)[side]
    closed = ReluDual._gaps(relu, slope, lower, upper)[side]
    assert torch.equal(generic, closed)
    (g_generic,) = torch.autograd.grad(generic.sum(), slope)
    (g_closed,) = torch.autograd.grad(closed.sum(), slope)
    assert torch.equal(g_generic, g_closed)


@pytest.mark.parametrize("seed", range(2))
def test_relu_faces_equal_the_generic_faces_on_the_slope_range(seed):
    """:class:`ReluFaces` (lower offset fixed at the range, the slope clamped into it) gives the generic
    faces' values on every projected slope, per row, and the same gradients where the slope is free (an
    unstable unit; a stable one's slope is pinned by the range, so its gradient moves nothing)."""
    from onnxdual.duals.base import SlopeFaces

    gen = torch.Generator().manual_seed(seed)
    n = 3000
    lower = torch.randn(1, n, generator=gen, dtype=torch.float64) * 2
    upper = lower + torch.rand(1, n, generator=gen, dtype=torch.float64) * 3
    lower[:, :200], upper[:, 200:400], upper[:, 400:600] = 0.0, 0.0, lower[:, 400:600]
    relu = ReluDual(None)
    fast = relu.faces(lower, upper)
    generic = ElementwiseActivation.faces(relu, lower, upper)
    theta = torch.rand(1, 4, n, generator=gen, dtype=torch.float64) * 1.6 - 0.3
    theta[:, :, ::5], theta[:, :, ::7] = 0.0, 1.0
    theta = generic.project((theta,))[0].requires_grad_(True)
    ours, theirs = fast.faces((theta,)), SlopeFaces.faces(generic, (theta,))
    parts = [(f.lower.slope, f.lower.offset, f.upper.slope, f.upper.offset) for f in (ours, theirs)]
    parts = [[t.expand_as(theta) for t in p] for p in parts]
    assert all(torch.equal(a, b) for a, b in zip(*parts))
    weights = [torch.randn(theta.shape, generator=gen, dtype=torch.float64) for _ in range(4)]
    g_ours, g_theirs = (torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, p)), theta,
                                            allow_unused=True)[0] for p in parts)
    free = relu.needs_bounds(lower, upper).unsqueeze(1).expand_as(theta)
    assert torch.equal(g_ours[free], g_theirs[free])
