"""Soundness of bounds through multi-input non-linearities on small networks: every certified lower bound of
random specifications ``C f(x)`` over an l_inf box lies below the best of PGD and dense sampling, in every
relaxation (the optimised one too, whose parameters the gradient pushes hardest); and the lower bounds of
the tighter relaxations are never looser than the paper's where they should not be."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
from tests.onnx_builders import make_model
from tests.oracles.attacks import pgd_minimize, sample_minimize

RELAXATIONS = ("paper", "adaptive", "optimized")


def gated_mlp(rng, op: str):
    """x -> (W1 x) op relu(W2 x) -> W3: a gate (Mul), a maximum of branches (Max) or a quotient (Div)."""
    w1, w2, w3 = (rng.normal(size=s).astype(np.float32) / 2 for s in ((5, 8), (5, 8), (8, 3)))
    nodes = [helper.make_node("MatMul", ["input", "W1"], ["a"]), helper.make_node("MatMul", ["input", "W2"], ["b0"]),
             helper.make_node("Relu", ["b0"], ["b1"]), helper.make_node("Add", ["b1", "One"], ["b"]),
             helper.make_node(op, ["a", "b"], ["h"]), helper.make_node("MatMul", ["h", "W3"], ["output"])]
    return make_model(nodes, [5], [3], {"W1": w1, "W2": w2, "W3": w3, "One": np.float32(1.0)})


def attention(rng, tokens=3, dim=4):
    """One attention head with a residual and a ReLU MLP: softmax(q k^T) v + x -> ReduceMax over tokens."""
    ws = {k: (rng.normal(size=(dim, dim)) / 2).astype(np.float32) for k in ("Wq", "Wk", "Wv", "Wm")}
    nodes = [helper.make_node("MatMul", ["input", "Wq"], ["q"]), helper.make_node("MatMul", ["input", "Wk"], ["k"]),
             helper.make_node("MatMul", ["input", "Wv"], ["v"]), helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["o"]), helper.make_node("Add", ["o", "input"], ["r"]),
             helper.make_node("MatMul", ["r", "Wm"], ["m0"]), helper.make_node("Relu", ["m0"], ["m"]),
             helper.make_node("ReduceMax", ["m"], ["output"], axes=[1], keepdims=0)]
    return make_model(nodes, [tokens, dim], [dim], ws, opset=13)


CASES = [("mul", lambda rng: gated_mlp(rng, "Mul"), (5,), 0.15), ("max", lambda rng: gated_mlp(rng, "Max"), (5,), 0.3),
         ("div", lambda rng: gated_mlp(rng, "Div"), (5,), 0.15), ("attention", attention, (3, 4), 0.05)]


@pytest.mark.parametrize("name,make,shape,eps", CASES, ids=[c[0] for c in CASES])
def test_bounds_below_attacks(name, make, shape, eps, soundness_seed, one_thread):
    rng = np.random.default_rng(soundness_seed)
    model = make(rng)
    net = onnxdual.load(model)
    x = torch.tensor(rng.normal(size=(2, *shape)), dtype=torch.float32)
    n_out = net(x).reshape(2, -1).shape[1]
    c = torch.tensor(rng.normal(size=(2, 4, n_out)), dtype=torch.float32)
    bounds = {}
    for relaxation in RELAXATIONS:
        with torch.no_grad():
            bounds[relaxation] = onnxdual.DualNetwork(net, x, eps, relaxation=relaxation).lower_bound(c).numpy()
    for b in range(2):
        lo, hi = (x[b] - eps).numpy(), (x[b] + eps).numpy()
        attack = pgd_minimize(net, c[b].numpy(), lo, hi, steps=40, restarts=4, seed=soundness_seed)
        fn = lambda pts: net(torch.tensor(pts, dtype=torch.float32)).reshape(len(pts), -1).detach().numpy()
        sampled = sample_minimize(fn, c[b].numpy(), lo, hi, n=512, seed=soundness_seed)
        best = np.minimum(attack, sampled)
        for relaxation, value in bounds.items():
            slack = best - value[b]
            assert (slack >= -1e-4 * (1 + np.abs(best))).all(), f"{name} {relaxation}: bound above attack {slack}"
    assert (bounds["optimized"] >= bounds["adaptive"] - 1e-5).all()  # never looser than its start
