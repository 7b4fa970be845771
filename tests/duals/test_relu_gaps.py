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
