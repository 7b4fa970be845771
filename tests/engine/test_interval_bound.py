"""Interval bounds (IBP) of the margins (engine/interval.py's interval_bound,
DualNetwork.interval_lower_bound) and the IBP-mixed training loss (robust_loss's interval_weight): the formula, soundness by sampling,
gradients by finite differences, and a projected network's loss still an estimate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import onnxdual
from onnxdual.engine.input_sets import make_input_set
from onnxdual.engine.network import DualNetwork, margin_matrix, robust_loss
from onnxdual.errors import InvalidInputError
from onnxdual.frontend.export import as_network
from tests.dual_checks import assert_finite_differences


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU(),
                         nn.Linear(5, 3))


def _loaded(module):
    """The module as onnxdual loads it (ONNX export, float32), in float64 for exact comparisons."""
    return as_network(module, torch.zeros(1, 1, 2, 3)).to(torch.float64)


class _Residual(nn.Module):
    """A skip connection around the last ReLU and an input term after it: values before the last
    activation (and the input itself) reach the elided tail."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b, self.c, self.d = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3), nn.Linear(6, 3)

    def forward(self, x):
        x = x.flatten(1)
        h = torch.relu(self.a(x))
        return self.c(torch.relu(self.b(h)) + h) + self.d(x)


def _manual_ibp(net, x, eps, c, clip):
    """IBP of the MLP written out: boxes through Linear/ReLU, the last Linear composed with C (elision)."""
    lo, hi = (x - eps).clamp(*clip).flatten(1), (x + eps).clamp(*clip).flatten(1)
    layers = [m for m in net if isinstance(m, nn.Linear)]
    for layer in layers[:-1]:
        center, radius = (lo + hi) / 2, (hi - lo) / 2
        mid, spread = center @ layer.weight.T + layer.bias, radius @ layer.weight.abs().T
        lo, hi = (mid - spread).relu(), (mid + spread).relu()
    last = layers[-1]
    a = c @ last.weight  # (B, m, hidden)
    center, radius = ((lo + hi) / 2).unsqueeze(-1), ((hi - lo) / 2).unsqueeze(-1)
    return (a @ center).squeeze(-1) + c @ last.bias - (a.abs() @ radius).squeeze(-1)


def test_interval_bound_is_ibp_with_the_last_layer_composed_with_c():
    module = _mlp()
    x = torch.rand(4, 1, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    c = margin_matrix(y, 3).double()
    got = DualNetwork(_loaded(module), x, 0.1, clip=(0.0, 1.0)).interval_lower_bound(c)
    expected = _manual_ibp(module.double(), x, 0.1, c, (0.0, 1.0))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(got[torch.arange(4), y], torch.zeros(4, dtype=torch.float64))  # row y of C is zero


@pytest.mark.parametrize("module, norm", [(_mlp(2), "linf"), (_mlp(3), "l2"), (_Residual(), "linf"),
                                          (_Residual(), "l2")])
def test_interval_bound_lies_below_every_sampled_margin(module, norm):
    net = _loaded(module)
    x = torch.rand(3, 1, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    c = margin_matrix(y, 3).double()
    eps = 0.3
    with torch.no_grad():
        bound = DualNetwork(net, x, eps, norm).interval_lower_bound(c)
        points = make_input_set(x, eps, norm).sample(2000, torch.Generator().manual_seed(0))
        outputs = torch.stack([net(p) for p in points])  # (n, B, 3)
        margins = torch.einsum("bmk,nbk->nbm", c, outputs)
    assert (margins >= bound - 1e-9).all()
    assert (margins.amin(0) - bound).amin() < 1.0  # not vacuous


def test_mixed_loss_is_the_convex_combination_of_dual_and_interval_bounds():
    net = _loaded(_mlp(4))
    x = torch.rand(5, 1, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    c = margin_matrix(y, 3).double()
    dual = DualNetwork(net, x, 0.05)
    j, j_ibp = dual.lower_bound(c), dual.interval_lower_bound(c)
    for w in (0.0, 0.3, 1.0):
        ce, err = robust_loss(net, 0.05, x, y, interval_weight=w, size_average=False)
        mixed = (1 - w) * j + w * j_ibp
        torch.testing.assert_close(ce, F.cross_entropy(-mixed, y, reduction="none"))
        others = ~F.one_hot(y, 3).bool()
        torch.testing.assert_close(err, ((mixed <= 0) & others).any(1).double())


def test_pure_interval_training_draws_no_projections_and_a_mix_stays_an_estimate():
    net = _loaded(_mlp(5))
    x = torch.rand(2, 1, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 2])
    gen = torch.Generator().manual_seed(7)
    before = gen.get_state()
    ibp, _ = robust_loss(net, 0.1, x, y, proj=5, generator=gen, interval_weight=1.0)
    assert torch.equal(gen.get_state(), before)  # no dual pass ran
    exact, _ = robust_loss(net, 0.1, x, y, interval_weight=1.0)
    torch.testing.assert_close(ibp, exact)
    projected = DualNetwork(net, x, 0.1, proj=5, generator=gen)
    with pytest.raises(TypeError, match="estimates, not bounds"):
        projected.lower_bound(margin_matrix(y, 3).double())
    # the interval bound itself needs no projections: it is a bound of the projected network too
    torch.testing.assert_close(projected.interval_lower_bound(margin_matrix(y, 3).double()),
                               DualNetwork(net, x, 0.1).interval_lower_bound(margin_matrix(y, 3).double()))


@pytest.mark.parametrize("proj, w", [(None, 1.0), (None, 0.4), (5, 0.4)])
def test_mixed_loss_gradients_match_finite_differences(proj, w):
    net = _loaded(_mlp(6))
    x = torch.rand(2, 1, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 2])
    params = list(net.parameters())

    def loss():
        gen = torch.Generator().manual_seed(11)
        return onnxdual.robust_loss(net, 0.1, x, y, proj=proj, generator=gen, interval_weight=w)[0]

    assert_finite_differences(loss, params, samples=4)


@pytest.mark.parametrize("w", [-0.1, 1.5, True, float("nan")])
def test_interval_weight_outside_zero_one_is_refused(w):
    net = _loaded(_mlp())
    with pytest.raises(InvalidInputError, match="interval_weight"):
        robust_loss(net, 0.1, torch.rand(1, 1, 2, 3, dtype=torch.float64), torch.tensor([0]),
                    interval_weight=w)
