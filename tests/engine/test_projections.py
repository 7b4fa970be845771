"""Random projections (Alg. 1, Theorem 2): estimates converge to the exact dual bound, gradients are
right, and estimates are a different type from bounds."""

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
from tests.dual_checks import assert_finite_differences
from tests.onnx_builders import make_model


def _net(seed=0, width=40, depth=2, n_in=12, n_out=4, dtype=torch.float32):
    rng = np.random.default_rng(seed)
    nodes, inits, prev, d = [], {}, "input", n_in
    for i in range(depth):
        inits[f"W{i}"] = (rng.normal(size=(width, d)) / np.sqrt(d)).astype(np.float32)
        inits[f"b{i}"] = (rng.normal(size=width) * 0.1).astype(np.float32)
        nodes += [helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [f"h{i}"], transB=1),
                  helper.make_node("Relu", [f"h{i}"], [f"r{i}"])]
        prev, d = f"r{i}", width
    inits["Wo"] = (rng.normal(size=(n_out, d)) / np.sqrt(d)).astype(np.float32)
    nodes.append(helper.make_node("Gemm", [prev, "Wo"], ["output"], transB=1))
    net = onnxdual.load(make_model(nodes, [n_in], [n_out], inits))
    return net.to(dtype)


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 1.0)])
def test_estimates_converge_to_the_exact_bound(norm, eps):
    net = _net()
    x = torch.randn(8, 12)
    c = onnxdual.margin_matrix(net(x).argmax(1), 4)
    with torch.no_grad():
        exact = onnxdual.DualNetwork(net, x, eps, norm).lower_bound(c)
        errors = {}
        for r in (10, 100, 2000):
            errs = []
            for seed in range(5):
                gen = torch.Generator().manual_seed(seed)
                est = onnxdual.DualNetwork(net, x, eps, norm, proj=r, generator=gen).estimate(c).value
                errs.append(((est - exact).abs() / exact.abs().clamp_min(1e-3)).median().item())
            errors[r] = float(np.mean(errs))
    assert errors[2000] < errors[100] < errors[10]
    assert errors[2000] < 0.05


def test_proj_none_is_the_exact_bound():
    net = _net(1)
    x = torch.randn(4, 12)
    c = onnxdual.margin_matrix(torch.zeros(4, dtype=torch.long), 4)
    dual = onnxdual.DualNetwork(net, x, 0.2)
    assert torch.equal(dual.estimate(c).value, dual.lower_bound(c))


def test_estimate_is_not_a_bound():
    net = _net(2)
    x = torch.randn(2, 12)
    dual = onnxdual.DualNetwork(net, x, 0.2, proj=10)
    c = onnxdual.margin_matrix(torch.zeros(2, dtype=torch.long), 4)
    with pytest.raises(TypeError, match="estimate"):
        dual.lower_bound(c)
    with pytest.raises(TypeError):
        dual.bounds()
    assert isinstance(dual.estimate(c), onnxdual.Estimate)


def test_same_seed_same_estimate():
    net = _net(3)
    x = torch.randn(3, 12)
    y = net(x).argmax(1)
    runs = [onnxdual.robust_loss(net, 0.2, x, y, proj=10, generator=torch.Generator().manual_seed(7))[0]
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("proj", [None, 5])
def test_gradients_match_finite_differences(proj):
    torch.manual_seed(0)
    net = _net(4, width=6, depth=2, n_in=3, n_out=3, dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    y = torch.tensor([0, 2])
    params = [p for p in net.parameters()]

    def loss():
        gen = torch.Generator().manual_seed(11)
        return onnxdual.robust_loss(net, 0.1, x, y, proj=proj, generator=gen)[0]

    assert_finite_differences(loss, params, samples=5)


def test_chunked_exact_equals_unchunked(shared):
    net = onnxdual.load(shared("reference", "models", "mnist_small.onnx"))
    x = torch.load(shared("reference", "models", "inputs_1x28x28.pt"))[:6]
    c = onnxdual.margin_matrix(net(x).argmax(1), 10)
    with torch.no_grad():
        full = onnxdual.DualNetwork(net, x, 0.05).lower_bound(c)
        tiny = onnxdual.DualNetwork(net, x, 0.05, memory_budget=1)
        assert tiny.chunk_size() == 1
        torch.testing.assert_close(tiny.lower_bound(c), full, rtol=1e-5, atol=1e-5)


def _residual_net(seed=0, width=6, n_in=3, n_out=3, dtype=torch.float64):
    """Gemm-Relu-Gemm-Relu-Gemm, plus a skip from the first Relu: the Add joins columns of two sources with
    those of three (the stacked columns are laid out on the union, the missing block as zeros)."""
    rng = np.random.default_rng(seed)
    inits = {"W0": rng.normal(size=(width, n_in)), "b0": rng.normal(size=width) * 0.3,
             "W1": rng.normal(size=(width, width)) / np.sqrt(width), "b1": rng.normal(size=width) * 0.3,
             "W2": rng.normal(size=(width, width)) / np.sqrt(width), "Wo": rng.normal(size=(n_out, width))}
    inits = {k: v.astype(np.float32) for k, v in inits.items()}
    nodes = [helper.make_node("Gemm", ["input", "W0", "b0"], ["h0"], transB=1),
             helper.make_node("Relu", ["h0"], ["r0"]),
             helper.make_node("Gemm", ["r0", "W1", "b1"], ["h1"], transB=1),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Gemm", ["r1", "W2"], ["h2"], transB=1),
             helper.make_node("Add", ["h2", "r0"], ["s"]),
             helper.make_node("Relu", ["s"], ["r2"]),
             helper.make_node("Gemm", ["r2", "Wo"], ["output"], transB=1)]
    return onnxdual.load(make_model(nodes, [n_in], [n_out], inits)).to(dtype)


def test_residual_estimates_converge_and_gradients_match_finite_differences():
    """Stacked projected columns through a skip connection: the estimate converges to the exact bound, and
    the gradients of the projected loss are those of finite differences."""
    net = _residual_net()
    x = torch.randn(3, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    c = onnxdual.margin_matrix(y, 3).to(torch.float64)
    with torch.no_grad():
        exact = onnxdual.DualNetwork(net, x, 0.2).lower_bound(c)
        gen = torch.Generator().manual_seed(0)
        est = onnxdual.DualNetwork(net, x, 0.2, proj=4000, generator=gen).estimate(c)
    mask = c.abs().sum(-1) > 0
    assert ((est.value - exact).abs() / exact.abs().clamp_min(1e-3))[mask].median() < 0.05
    params = list(net.parameters())

    def loss():
        return onnxdual.robust_loss(net, 0.2, x, y, proj=5, generator=torch.Generator().manual_seed(3))[0]

    assert_finite_differences(loss, params, samples=4)


@pytest.mark.parametrize("r", [1, 2, 3, 9, 10, 11, 31, 50, 64, 65, 80])
def test_median_estimator_is_torch_median_with_its_gradient(r):
    """The sorting-network median (eq. 12) has torch.median's value (the lower middle for even r) and
    gradient, also on a block of zeros (no gradient) and above the network's size limit."""
    from onnxdual.engine.projected import median_abs

    x = torch.randn(3, 2, r, 5, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        x[0, 0, :, 0] = 0
    value, ref = median_abs(x), x.abs().median(dim=-2).values
    assert torch.equal(value, ref)
    g = torch.randn_like(value)
    assert torch.equal(torch.autograd.grad(value, x, g)[0], torch.autograd.grad(ref, x, g)[0])


def test_block_norms_are_the_sum_of_per_source_estimates():
    """One call on the stacked columns equals each source's own estimate (median / root mean square /
    App. E tail bound), summed."""
    from onnxdual.engine.projected import block_norms
    from onnxdual.engine.tail_bounds import TailBound

    torch.manual_seed(0)
    norms = ["l2", "l1", "l1"]
    flat = torch.randn(4, 3 * 12, 7, dtype=torch.float64)
    blocks = flat.reshape(4, 3, 12, 7)
    want = blocks[:, 0].pow(2).mean(1).sqrt() + sum(blocks[:, i].abs().median(1).values for i in (1, 2))
    torch.testing.assert_close(block_norms(flat, norms, 12), want, rtol=1e-12, atol=0)
    tail = TailBound.for_failure(1e-3, 4, 3)
    geo = [blocks[:, i].reshape(4, 3, 4, 7).abs().log().mean(2).exp().amax(1) * tail.l1_factor
           for i in (1, 2)]
    rms = blocks[:, 0].reshape(4, 3, 4, 7).pow(2).mean(2).sqrt().amax(1) * tail.l2_factor
    torch.testing.assert_close(block_norms(flat, norms, 12, tail), rms + geo[0] + geo[1], rtol=1e-12, atol=0)
