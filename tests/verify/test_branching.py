"""onnxdual.verify.relu_split: ReLU branch and bound, forced on (no input splitting), against an exact MILP.
Properties ``c . f(x) <= t`` are placed a little below (unsat) or above (sat) the exact minimum: the
verifier must never contradict the MILP, must prove unsat properties that the root bound alone cannot, and
the split bookkeeping must keep children covering their parent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from onnxdual.verify import SAT, UNSAT, Deadline, Verifier, load_network
from onnxdual.verify.relu_split import Domains, ReluBranching, relu_layers
from tests.milp_oracle import milp_minimum, random_dense
from tests.verify.conftest import prop_of, save

SEEDS = range(10)


def _instance(seed: int, tmp_path):
    rng = np.random.default_rng([seed, 21])
    net = random_dense(rng, 6, [12, 12], 3)
    path = save(net.onnx_model, tmp_path / f"net{seed}.onnx")
    center = rng.uniform(-1, 1, size=6)
    eps = float(rng.uniform(0.3, 0.8))
    c = rng.normal(size=3)
    exact = milp_minimum(net, c.astype(np.float32), center - eps, center + eps)
    return load_network(path), center, eps, c, exact


def _decide(network, center, eps, c, threshold, timeout=20.0, branching=True):
    # unsafe: c . y <= threshold, i.e. a y <= b with a = c
    prop = prop_of([(center - eps, center + eps, [(c, [threshold])])], 6, 3)
    verifier = Verifier.for_network(network, split_max_inputs=0, relu_branching=branching)
    return verifier.decide(prop, Deadline(timeout))


@pytest.mark.parametrize("seed", SEEDS)
def test_answers_never_contradict_the_milp(seed, tmp_path):
    network, center, eps, c, exact = _instance(seed, tmp_path)
    gap = 0.02 * (1 + abs(exact))
    below = _decide(network, center, eps, c, exact - gap)  # unreachable: unsat
    above = _decide(network, center, eps, c, exact + gap)  # reachable: sat (or unknown)
    assert below.answer != SAT
    assert above.answer != UNSAT


def test_branching_proves_what_the_root_bound_cannot(tmp_path):
    proven_only_by_branching = 0
    for seed in SEEDS:
        network, center, eps, c, exact = _instance(seed, tmp_path)
        threshold = exact - 0.02 * (1 + abs(exact))
        root = _decide(network, center, eps, c, threshold, branching=False)
        if root.answer == UNSAT:
            continue
        if _decide(network, center, eps, c, threshold).answer == UNSAT:
            proven_only_by_branching += 1
    assert proven_only_by_branching >= 8  # branch and bound is complete here (exact LP at the leaves)


def test_children_cover_the_parent_and_split_an_unstable_relu(tmp_path):
    network, center, eps, c, _ = _instance(0, tmp_path)
    layers = relu_layers(network.net, network.example_shape)
    assert list(layers) and all(math.prod(s) == 12 for s in layers.values())
    search = ReluBranching(None, layers)
    parent = search.roots(torch.tensor([0]), torch.tensor([[True]]))
    lower = {name: torch.tensor([[-1.0] * 12]) for name in layers}
    upper = {name: torch.tensor([[1.0] * 12]) for name in layers}
    duals = {name: -torch.ones(1, 12) for name in layers}
    children, settled = search.split(parent, torch.tensor([[True]]), torch.tensor([-1.0]),
                                     {k: (lower[k], upper[k]) for k in layers}, duals)
    assert isinstance(children, Domains) and len(children) == 2 and settled is None
    decided = [(name, j) for name in layers for j in range(12) if children.phase[name][:, j].any()]
    assert len(decided) == 1  # one unit, x >= 0 in the first child and x <= 0 in the second
    name, j = decided[0]
    assert children.phase[name][:, j].tolist() == [1, -1]
    lower, upper = children.limits(name)
    assert (lower[0, j], upper[0, j]) == (0.0, math.inf) and (lower[1, j], upper[1, j]) == (-math.inf, 0.0)
