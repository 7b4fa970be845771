"""Every ``unsat`` re-checked in float64 (issue 17 K): on fresh random small networks (the run's soundness
seed), properties ``c . f(x) <= t`` placed just below, a hair below and a hair above the exact minimum; each
answer the verifier gives as ``unsat`` is re-checked against the float64 MILP minimum (the weights' exact
values, no float32 rounding), each ``sat`` witness by a float64 forward pass."""

from __future__ import annotations

import numpy as np
import pytest

from onnxdual.verify import SAT, UNSAT, Deadline, Verifier, load_network
from tests.milp_oracle import milp_minimum, random_dense
from tests.verify.conftest import prop_of, save


@pytest.mark.parametrize("i", range(6))
def test_every_unsat_holds_in_float64(soundness_seed, i, tmp_path):
    seed = [soundness_seed, 17, i]
    rng = np.random.default_rng(seed)
    n_in, n_out = int(rng.integers(2, 5)), int(rng.integers(2, 4))
    net = random_dense(rng, n_in, [int(rng.integers(4, 9))] * int(rng.integers(1, 3)), n_out)
    network = load_network(save(net.onnx_model, tmp_path / "net.onnx"))
    center, eps = rng.uniform(-1, 1, size=n_in), float(rng.uniform(0.1, 0.6))
    c = rng.normal(size=n_out)
    lower, upper = center - eps, center + eps
    exact = milp_minimum(net, c.astype(np.float32), lower, upper)
    scale = 1 + abs(exact)
    for threshold in (exact - 0.02 * scale, exact - 1e-4 * scale, exact + 1e-4 * scale):
        prop = prop_of([(lower, upper, [(c, [threshold])])], n_in, n_out)
        verifier = Verifier.for_network(network, split_max_inputs=n_in)
        result = verifier.decide(prop, Deadline(5.0))
        where = f"seed {seed}, threshold {threshold!r}, exact minimum {exact!r}"
        if result.answer == UNSAT:
            assert exact > threshold, f"unsat, but the float64 MILP reaches c.f(x) = {exact} <= t ({where})"
        if result.answer == SAT:
            x = np.asarray(result.witness_x, dtype=np.float64).reshape(1, -1)
            assert (lower - 1e-6 <= x).all() and (x <= upper + 1e-6).all(), where
            value = float((net.forward(x) @ c)[0])
            assert value <= threshold + 1e-5 * scale, f"the witness gives {value} > t ({where})"
