"""Exactness: onnxdual's exact bounds equal the paper's implementation (convex_adversarial) and auto_LiRPA's
same-slope CROWN on the fixed reference models, per layer too."""

import pytest
import torch

import onnxdual

CASES = [("mnist_small", 0.01), ("mnist_small", 0.1), ("mnist_fc_256x2", 0.01), ("mnist_fc_256x2", 0.1)]


def _rel(a, b):
    """Largest relative difference, with an absolute floor of 1e-5 for entries near zero (float32 noise)."""
    return ((a - b).abs() / b.abs().clamp_min(0.1)).max().item()


def _load(shared, model, eps, suffix=""):
    ref = torch.load(shared("reference", "convex_adversarial", f"bounds_{model}{suffix}_eps{eps}.pt"),
                     weights_only=False)
    net = onnxdual.load(shared("reference", "models", f"{model}.onnx"))
    x = torch.load(shared("reference", "models", "inputs_1x28x28.pt"))[:16]
    return ref, net, x


@pytest.mark.parametrize("model,eps", CASES)
@pytest.mark.parametrize("clip", [None, (0.0, 1.0)])
def test_exact_bounds_equal_convex_adversarial(shared, model, eps, clip):
    ref, net, x = _load(shared, model, eps)
    key = "exact" if clip is None else "exact_bounded01"
    dual = onnxdual.DualNetwork(net, x, eps, clip=clip)
    with torch.no_grad():
        lb = dual.lower_bound(onnxdual.margin_matrix(ref["y"], 10))
        assert _rel(lb, ref[key]) < 1e-4
        for (name, bounds), (lower, upper) in zip(dual.bounds().items(), ref[f"{key}_intermediate"]):
            assert _rel(bounds.lower.reshape(lower.shape), lower) < 1e-4, name
            assert _rel(bounds.upper.reshape(upper.shape), upper) < 1e-4, name


@pytest.mark.parametrize("eps", [0.1, 1.58])
def test_exact_l2_bounds_equal_convex_adversarial(shared, eps):
    ref, net, x = _load(shared, "mnist_small", eps, suffix="_l2")
    with torch.no_grad():
        lb = onnxdual.DualNetwork(net, x, eps, norm="l2").lower_bound(onnxdual.margin_matrix(ref["y"], 10))
    assert _rel(lb, ref["exact"]) < 1e-4


@pytest.mark.parametrize("model,eps", CASES)
def test_equals_auto_lirpa_same_slope_crown(shared, model, eps):
    ref = torch.load(shared("reference", "auto_lirpa", f"bounds_{model}_eps{eps}_CROWN-sameslope-pure.pt"),
                     weights_only=False)
    _, net, x = _load(shared, model, eps)
    with torch.no_grad():
        lb = onnxdual.DualNetwork(net, x, eps).lower_bound(ref["C"].float())
    assert _rel(lb, ref["lb"]) < 1e-4


def test_bound_is_at_most_auto_lirpa_crown_and_at_least_ibp(shared):
    """Sanity ordering: IBP <= same slope (ours) <= adaptive CROWN <= alpha-CROWN."""
    _, net, x = _load(shared, "mnist_small", 0.01)
    load = lambda m: torch.load(shared("reference", "auto_lirpa", f"bounds_mnist_small_eps0.01_{m}.pt"),
                                weights_only=False)
    ibp, crown = load("IBP"), load("CROWN")
    with torch.no_grad():
        lb = onnxdual.DualNetwork(net, x, 0.01).lower_bound(crown["C"].float())
    assert (lb >= ibp["lb"] - 1e-5).all() and (lb <= crown["lb"] + 1e-5).all()
