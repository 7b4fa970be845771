"""Networks without ReLUs to branch on (Sigmoid here): after the adaptive roots and the attacks, the verifier
tries the optimised faces on the root boxes (:meth:`Verifier._optimized_roots`) -- a proof the adaptive
bound misses, and never one the network contradicts."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

import onnxdual
from onnxdual.verify import UNKNOWN, UNSAT, Deadline, Verifier, load_network
from tests.onnx_builders import make_model
from tests.verify.conftest import prop_of


@pytest.fixture(scope="module")
def sigmoid_net(tmp_path_factory):
    rng = np.random.default_rng(2)  # a net where optimised faces gain 0.29 over adaptive on the box below
    init = {"W1": rng.normal(size=(8, 4)) * 1.5, "B1": rng.normal(size=8) * 0.3,
            "W2": rng.normal(size=(8, 8)), "B2": rng.normal(size=8) * 0.3, "W3": rng.normal(size=(1, 8))}
    init = {k: v.astype(np.float32) for k, v in init.items()}
    nodes = [helper.make_node("Gemm", ["input", "W1", "B1"], ["h1"], transB=1),
             helper.make_node("Sigmoid", ["h1"], ["s1"]),
             helper.make_node("Gemm", ["s1", "W2", "B2"], ["h2"], transB=1),
             helper.make_node("Sigmoid", ["h2"], ["s2"]),
             helper.make_node("Gemm", ["s2", "W3"], ["output"], transB=1)]
    path = tmp_path_factory.mktemp("sigmoid") / "sigmoid.onnx"
    onnx.save(make_model(nodes, [4], [1], init), str(path))
    return load_network(str(path))


def test_the_optimised_roots_prove_what_adaptive_bounds_do_not(sigmoid_net):
    lo, hi = np.full(4, -0.5), np.full(4, 0.5)
    x, eps = torch.zeros((1, 4)), torch.full((1, 4), 0.5)
    c = torch.ones((1, 1, 1))
    with torch.no_grad():
        adaptive = float(onnxdual.DualNetwork(sigmoid_net.net, x, eps, relaxation="adaptive").lower_bound(c))
        optimized = float(onnxdual.DualNetwork(sigmoid_net.net, x, eps, relaxation="optimized").lower_bound(c))
        samples = torch.rand((20000, 4), generator=torch.Generator().manual_seed(0)) - 0.5
        true_min = float(sigmoid_net.net(samples).min())
    assert adaptive < optimized - 1e-3 and optimized <= true_min  # the gap this test needs, and soundness
    threshold = (adaptive + optimized) / 2  # unsafe: y <= threshold, unreachable (below the true minimum)
    prop = prop_of([(lo, hi, [([1.0], [threshold])])], 4, 1)
    # split_max_inputs=0: the inputs are not split, so the roots are what decides
    assert Verifier.for_network(sigmoid_net, split_max_inputs=0).decide(prop, Deadline(60)).answer == UNSAT
    adaptive_only = Verifier.for_network(sigmoid_net, split_max_inputs=0, relaxation="adaptive")
    assert adaptive_only.decide(prop, Deadline(60)).answer == UNKNOWN


def test_a_reachable_region_is_never_proven(sigmoid_net):
    lo, hi = np.full(4, -1.0), np.full(4, 1.0)
    with torch.no_grad():
        samples = torch.rand((20000, 4), generator=torch.Generator().manual_seed(1)) * 2 - 1
        true_min = float(sigmoid_net.net(samples).min())
    prop = prop_of([(lo, hi, [([1.0], [true_min + 1e-4])])], 4, 1)  # a sampled point reaches it
    answer = Verifier.for_network(sigmoid_net, split_max_inputs=0).decide(prop, Deadline(60)).answer
    assert answer != UNSAT
