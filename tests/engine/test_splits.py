"""Branch and bound in the engine: DualNetwork(..., splits=...) with Lagrange terms ``inner`` on the split
units. Every branch bound is below the exact MILP minimum over that branch (for any multiplier beta >= 0),
the multipliers do tighten branch bounds, empty branches get +inf, and the recorded dual variables are the
sensitivities of the bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnxdual
from onnxdual.engine.autodual import INPUT_DUAL
from tests.milp_oracle import milp_minimum, random_dense


def _net_and_box(seed: int):
    rng = np.random.default_rng([seed, 5])
    net = random_dense(rng, int(rng.integers(2, 6)), [int(rng.integers(4, 10))] * int(rng.integers(1, 4)), 3,
                       skip=seed % 3 == 1)
    x = torch.from_numpy(rng.uniform(-1, 1, size=(1, net.input_shape[0])).astype(np.float32))
    eps = float(rng.uniform(0.2, 0.8))
    c = torch.from_numpy(rng.normal(size=(1, 2, 3)).astype(np.float32))
    return net, onnxdual.load(net.onnx_model), x, eps, c, rng


def _branches(dual, rng, k=3):
    """Up to k random unstable ReLUs and every phase combination of them as a batch of branches:
    (chosen [(layer, unit)], combos [[active?]], splits, signs per layer (-1 active, +1 inactive))."""
    bounds = dual.bounds()
    names = list(bounds)
    unstable = [(li, j) for li, name in enumerate(names)
                for j in ((bounds[name].lower[0] < 0) & (bounds[name].upper[0] > 0)).nonzero().flatten()
                .tolist()]
    if not unstable:
        return None
    chosen = [unstable[i] for i in rng.choice(len(unstable), size=min(k, len(unstable)), replace=False)]
    combos = [[bool(b >> i & 1) for i in range(len(chosen))] for b in range(2 ** len(chosen))]
    n = len(combos)
    splits = {name: (torch.full((n, *bounds[name].lower.shape[1:]), -torch.inf),
                     torch.full((n, *bounds[name].lower.shape[1:]), torch.inf)) for name in names}
    signs = {name: torch.zeros((n, *bounds[name].lower.shape[1:])) for name in names}
    for row, phases in enumerate(combos):
        for (li, j), active in zip(chosen, phases):
            splits[names[li]][0 if active else 1][row, j] = 0.0
            signs[names[li]][row, j] = -1.0 if active else 1.0
    return names, chosen, combos, splits, signs


def _branch_bounds(module, x, eps, c, splits, signs, beta_scale, rng):
    n = next(iter(splits.values()))[0].shape[0]
    m = c.shape[1]
    inner = {name: s.unsqueeze(1) * torch.from_numpy(rng.uniform(0, beta_scale, size=(n, m, *s.shape[1:]))
                                                     .astype(np.float32)) for name, s in signs.items()}
    dual = onnxdual.DualNetwork(module, x.expand(n, -1), eps, splits=splits)
    with torch.no_grad():
        return dual.lower_bound(c.expand(n, -1, -1), inner=inner).double().numpy()


@pytest.mark.parametrize("seed", range(30))
def test_every_branch_bound_is_below_the_exact_branch_minimum(seed):
    net, module, x, eps, c, rng = _net_and_box(seed)
    found = _branches(onnxdual.DualNetwork(module, x, eps), rng)
    if found is None:
        pytest.skip("no unstable ReLU for this seed")
    _, chosen, combos, splits, signs = found
    lo, hi = x[0].numpy() - eps, x[0].numpy() + eps
    exact = np.array([[milp_minimum(net, c[0, i].numpy(), lo, hi, dict(zip(chosen, phases)))
                       for i in range(c.shape[1])] for phases in combos])
    for beta_scale in (0.0, 0.5, 3.0):
        lb = _branch_bounds(module, x, eps, c, splits, signs, beta_scale, rng)
        ok = (lb <= exact + 1e-5 * (1 + np.abs(exact))) | np.isinf(exact)
        assert ok.all(), f"unsound branch bound with beta scale {beta_scale}: {lb[~ok]} > {exact[~ok]}"


def test_multipliers_tighten_branch_bounds():
    """The Lagrange terms are not a no-op: on some branches a positive beta raises the bound above beta = 0
    (the dual alone does not know x_j >= 0; the term -beta x_j charges the relaxed points that violate it)."""
    improved = 0
    for seed in range(12):
        net, module, x, eps, c, rng = _net_and_box(seed)
        found = _branches(onnxdual.DualNetwork(module, x, eps), rng, k=1)
        if found is None:
            continue
        *_, splits, signs = found
        plain = _branch_bounds(module, x, eps, c, splits, signs, 0.0, rng)
        best = np.max([_branch_bounds(module, x, eps, c, splits, signs, s, rng) for s in (0.1, 0.3, 1.0)], 0)
        improved += bool((best > plain + 1e-4).any())
    assert improved >= 3


def test_an_empty_branch_is_proven_by_emptiness():
    for seed in range(10):
        net, module, x, eps, c, _ = _net_and_box(seed)
        bounds = onnxdual.DualNetwork(module, x, eps).bounds()
        name = next(iter(bounds))
        off = (bounds[name].upper[0] < 0).nonzero().flatten()
        if off.numel():
            break
    else:
        pytest.skip("no inactive ReLU")
    lower = bounds[name].lower
    lo_limit = torch.full_like(lower, -torch.inf)
    lo_limit[0, off[0]] = 0.0  # demand x_j >= 0 where x_j < 0 on the whole box
    lb = onnxdual.DualNetwork(module, x, eps, splits={name: (lo_limit, torch.full_like(lower, torch.inf))}
                              ).lower_bound(c)
    assert torch.isinf(lb).all() and (lb > 0).all()


def test_recorded_duals_are_the_sensitivity_of_the_bound_to_inner_terms():
    """J(c) with an inner term t e_j on an activation *output* value is J + t nu_j (the dual is linear)."""
    for seed in range(10):
        net, module, x, eps, c, _ = _net_and_box(seed)
        dual = onnxdual.DualNetwork(module, x, eps)
        value, nus = dual.activation_duals(c[:, :1])
        assert set(nus) == set(dual.bounds()) | {INPUT_DUAL}
        nus.pop(INPUT_DUAL)
        names = list(nus)
        if len(names) >= 2:
            break
    # the output of the first ReLU is the (affine) input of the second one's preceding Gemm: compare the
    # bound's change under a tiny midpoint shift of the first ReLU's relaxation with nu there
    relax = dual._ensure_pass()[0][1].relaxations[names[0]]
    bump = torch.zeros_like(relax.low)
    bump[0, 0] = 1e-2
    from onnxdual.duals.base import Relaxation

    dual._ensure_pass()[0][1].relaxations[names[0]] = Relaxation(relax.slope, relax.low + bump,
                                                                  relax.high + bump)
    moved = dual.lower_bound(c[:, :1])
    torch.testing.assert_close(moved - value, nus[names[0]][0, 0, 0] * 1e-2 * torch.ones_like(value),
                               rtol=1e-3, atol=1e-5)


def test_inner_terms_are_checked():
    net, module, x, eps, c, _ = _net_and_box(0)
    dual = onnxdual.DualNetwork(module, x, eps)
    with pytest.raises(onnxdual.InvalidInputError, match="not an activation"):
        dual.lower_bound(c, inner={"nope": torch.zeros(1, 2, 3)})
