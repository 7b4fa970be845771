"""Random projections (Alg. 1, Theorem 2): estimates converge to the exact dual bound, gradients are
right, and estimates are a different type from bounds."""

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
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

    value = loss()
    grads = torch.autograd.grad(value, params)
    h = 1e-6
    for p, g in zip(params, grads):
        flat = p.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 5)):
            old = flat[i].item()
            flat[i] = old + h
            up = loss().item()
            flat[i] = old - h
            down = loss().item()
            flat[i] = old
            assert abs((up - down) / (2 * h) - g.view(-1)[i].item()) < 1e-4 * (1 + abs(g.view(-1)[i].item()))


def test_chunked_exact_equals_unchunked(shared):
    net = onnxdual.load(shared("reference", "models", "mnist_small.onnx"))
    x = torch.load(shared("reference", "models", "inputs_1x28x28.pt"))[:6]
    c = onnxdual.margin_matrix(net(x).argmax(1), 10)
    with torch.no_grad():
        full = onnxdual.DualNetwork(net, x, 0.05).lower_bound(c)
        tiny = onnxdual.DualNetwork(net, x, 0.05, memory_budget=1)
        assert tiny.chunk_size() == 1
        torch.testing.assert_close(tiny.lower_bound(c), full, rtol=1e-5, atol=1e-5)
