"""Real witnesses proven by bounds (:meth:`Counterexamples.prove_real_points`): a box whose inputs are fixed at
decimals float32 cannot represent holds no float32 witness, but ``sat`` is right when every real input around
its centre provably reaches the unsafe region. Checked against the network evaluated in float64 at the
witness: a ``sat`` here must be true there, and a clear one must be found."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper
from onnxdual_cli.verify import standalone

from onnxdual.verify import SAT, TIMEOUT, UNKNOWN, UNSAT, Deadline, Verifier
from onnxdual.verify.problem import float32_points
from tests.verify.conftest import prop_of


def float64_output(network, x: np.ndarray) -> np.ndarray:
    """The network's output at the float64 input ``x`` computed in float64 (an independent check of the
    real-arithmetic value, exact to ~1e-15 here)."""
    net = copy.deepcopy(network.net).double()
    with torch.no_grad():
        return net(torch.from_numpy(x).reshape(1, *network.example_shape)).reshape(-1).numpy()


def decimals_without_float32(rng, n: int) -> np.ndarray:
    """``n`` values in [-1, 1] with 7 decimals that float32 cannot represent."""
    while True:
        x = np.round(rng.uniform(-1, 1, size=n), 7)
        if not np.any(x.astype(np.float32).astype(np.float64) == x):
            return x


def test_a_point_without_a_float32_value_is_sat_when_its_outputs_clearly_reach_the_region(twin):
    # x = 0.1 exactly (no float32 equals it), y0 = relu(x) = 0.1 >= 0.05: every real input near 0.1 meets it
    prop = prop_of([([0.1], [0.1], [([-1.0, 0.0], [-0.05])])], 1, 2)
    assert not bool(float32_points(torch.tensor([[0.1]], dtype=torch.float64),
                                   torch.tensor([[0.1]], dtype=torch.float64))[2][0])
    result = Verifier.for_network(twin).decide(prop, Deadline(10))
    assert result.answer == SAT and result.witness_proof == "bounds"
    assert result.witness_x.dtype == np.float64 and result.witness_x[0] == 0.1  # the real input itself
    assert result.witness_y.shape == (2,) and result.case == 0


def test_a_float32_witness_is_still_replayed(mlp):
    prop = prop_of([([0.25, 0.5], [0.25, 0.5], [([0.0, 0.0], [1.0])])], 2, 2)  # 0 <= 1: any output
    result = Verifier.for_network(mlp).decide(prop, Deadline(10))
    assert result.answer == SAT and result.witness_proof == "onnxruntime"


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("seed", range(2))
def test_sat_by_bounds_is_never_wrong_and_finds_the_clear_cases(mlp, seed, strict):
    """Thresholds at ``a y(x) + delta`` for the true float64 output ``y(x)``: ``delta < 0`` (the point misses
    the region, by as little as 1e-9) must never be sat, in either mode; ``delta >= 1e-3`` (it clearly meets
    it) must be sat. (Strict mode also never answers unsat for ``delta > 0``; without it an unsat proof's
    float32 arithmetic may be off by ~1e-8, as documented in :mod:`onnxdual.verify`.)"""
    rng = np.random.default_rng(seed)
    verifier = Verifier.for_network(mlp, strict=strict)
    for trial in range(6):
        x = decimals_without_float32(rng, 2)
        y = float64_output(mlp, x)
        a = rng.normal(size=2)
        a /= np.linalg.norm(a)
        for delta in (-1e-2, -1e-6, -1e-9, 1e-9, 1e-6, 1e-3, 1e-1):
            b = float(a @ y) + delta
            result = verifier.decide(prop_of([(x, x, [(a, [b])])], 2, 2), Deadline(10))
            if result.answer == SAT:
                assert result.witness_proof == "bounds"
                assert np.array_equal(result.witness_x, x)
                assert a @ float64_output(mlp, result.witness_x) <= b, (trial, delta)  # really in the region
            if delta >= 1e-3:
                assert result.answer == SAT, (trial, delta)
            if delta < 0:
                assert result.answer != SAT, (trial, delta)
            if strict and delta > 0:
                assert result.answer != UNSAT, (trial, delta)


def test_a_perturbed_box_without_float32_points_is_sat_through_its_centre(mlp):
    # x0 fixed at a decimal without float32 form (so the box has no float32 point), x1 in a range
    x0 = 0.1234567
    centre = np.array([x0, 0.25])
    y = float64_output(mlp, centre)
    prop = prop_of([([x0, 0.2], [x0, 0.3], [([-1.0, 0.0], [-(y[0] - 0.5)])])], 2, 2)  # y0 >= y0(c) - 0.5
    result = Verifier.for_network(mlp).decide(prop, Deadline(10))
    assert result.answer == SAT and result.witness_proof == "bounds"
    assert np.array_equal(result.witness_x, centre)


def test_the_cli_reports_and_serialises_a_real_witness_exactly(tmp_path):
    from tests.onnx_builders import make_model
    from onnx import helper

    nodes = [helper.make_node("Relu", ["input"], ["output"])]
    net = tmp_path / "relu.onnx"
    onnx.save(make_model(nodes, [1], [1], {}), str(net))
    query = tmp_path / "q.vnnlib"
    query.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (>= X_0 0.1))\n"
                     "(assert (<= X_0 0.1))\n(assert (>= Y_0 0.05))\n")
    runner = CliRunner()
    shown = runner.invoke(standalone, ["verify", str(query), "--network", f"N={net}", "--json"],
                          catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert '"witness_proof": "bounds"' in shown.stdout and '"answer": "sat"' in shown.stdout
    out = tmp_path / "assignment"
    written = runner.invoke(standalone, ["verify", str(query), "--network", f"N={net}",
                                         "--serialise-assignments", str(out)], catch_exceptions=False)
    assert written.exit_code == 0 and written.stdout == "sat\n", written.output
    x = numpy_helper.to_array(onnx.load_tensor(str(out / "X_0.pb")))
    assert x.dtype == np.float64 and float(x) == 0.1  # not rounded to a float32 outside the box


def test_a_box_whose_centre_misses_is_sat_through_a_deeper_point_an_attack_finds(mlp):
    # x0 fixed without a float32 form; the region y0 >= t holds on part of the x1 range only, not at its centre
    x0 = 0.1234567
    grid = np.stack([np.full(201, x0), np.linspace(-1, 1, 201)], 1)
    y0 = np.array([float64_output(mlp, g)[0] for g in grid])
    centre = float64_output(mlp, np.array([x0, 0.0]))[0]
    t = centre + 0.6 * (y0.max() - centre)  # above the centre's value, below the best one
    prop = prop_of([([x0, -1.0], [x0, 1.0], [([-1.0, 0.0], [-t])])], 2, 2)
    result = Verifier.for_network(mlp).decide(prop, Deadline(10))
    assert result.answer == SAT and result.witness_proof == "bounds"
    x = result.witness_x
    assert x[0] == x0 and -1.0 <= x[1] <= 1.0 and float64_output(mlp, x)[0] >= t
