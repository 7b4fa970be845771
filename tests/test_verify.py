"""onnxdual.verify: answers on tiny networks (proofs, float32-checked witnesses, timeouts, row combinations,
several input boxes, strict mode), float32 rounding of the input box, network loading (gzip, inputs without a
batch dimension) and the VNN-LIB 2.0 helpers (declarations, the standard's error conditions, assignments)."""

from __future__ import annotations

import gzip
import time

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxdual.engine.input_sets import Box
from onnxdual.errors import ModelLoadError, UnsupportedOpsError
from onnxdual.specs import InputRegion, OutputConstraint, Property, SpecError, parse_vnnlib
from onnxdual.verify import (
    SAT,
    TIMEOUT,
    UNKNOWN,
    UNSAT,
    Deadline,
    QueryError,
    Verifier,
    assignment_variables,
    check_element_types,
    declared_networks,
    dual_box,
    format_assignment,
    load_network,
    match_networks,
    serialise_assignment,
)
from tests.onnx_builders import make_model


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """2 -> 8 -> 8 -> 2 ReLU network (fixed random weights)."""
    rng = np.random.default_rng(3)
    init = {"W1": rng.normal(size=(8, 2)).astype(np.float32),
            "B1": rng.normal(size=8).astype(np.float32) * .3,
            "W2": (rng.normal(size=(8, 8)) / 3).astype(np.float32),
            "B2": rng.normal(size=8).astype(np.float32) * .3,
            "W3": (rng.normal(size=(2, 8)) / 3).astype(np.float32), "B3": np.zeros(2, np.float32)}
    nodes = [helper.make_node("Gemm", ["input", "W1", "B1"], ["h1"], transB=1),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Gemm", ["r1", "W2", "B2"], ["h2"], transB=1),
             helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("Gemm", ["r2", "W3", "B3"], ["output"], transB=1)]
    path = save(make_model(nodes, [2], [2], init), tmp_path_factory.mktemp("mlp") / "mlp.onnx")
    return load_network(path)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """1 input, y = [relu(x), relu(x)] (two equal outputs): y0 >= 0.6 and y1 <= 0.4 is unreachable, but no
    single constraint row shows it."""
    init = {"W": np.ones((2, 1), np.float32)}
    nodes = [helper.make_node("Relu", ["input"], ["r"]),
             helper.make_node("Gemm", ["r", "W"], ["output"], transB=1)]
    path = tmp_path_factory.mktemp("twin") / "twin.onnx"
    return load_network(save(make_model(nodes, [1], [2], init), path))


def prop_of(cases, n_in, n_out) -> Property:
    return Property(n_in, n_out, [(InputRegion(lo, hi), [OutputConstraint(np.atleast_2d(a), np.atleast_1d(b))
                                                         for a, b in conj]) for lo, hi, conj in cases])


def output_range(network, lo, hi, j, n=4000):
    x = np.random.default_rng(0).uniform(lo, hi, size=(n, len(lo))).astype(np.float32)
    with torch.no_grad():
        y = network.net(torch.from_numpy(x).reshape(n, *network.example_shape)).reshape(n, -1).numpy()
    return float(y[:, j].min()), float(y[:, j].max())


def run_ort(network, x):
    sess = network.session
    feed = {sess.get_inputs()[0].name: x.reshape(network.input_shape)}
    return np.asarray(sess.run(None, feed)[0]).reshape(-1)


def test_unsat_is_proven_with_a_positive_margin(mlp):
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    _, top = output_range(mlp, lo, hi, 0)
    prop = prop_of([(lo, hi, [([-1.0, 0.0], [-(top + 3.0)])])], 2, 2)  # unsafe: y0 >= top + 3
    result = Verifier.for_network(mlp).decide(prop, 10)
    assert result.answer == UNSAT
    assert result.best_margin > 0 and result.witness_x is None


def test_sat_has_a_float32_witness_in_the_box_confirmed_by_onnxruntime(mlp):
    lo, hi = [-1.0, -0.5], [1.0, 0.5]
    _, top = output_range(mlp, lo, hi, 0)
    a, b = np.array([[-1.0, 0.0]]), np.array([-(top - 0.05)])  # unsafe: y0 >= top - 0.05
    result = Verifier.for_network(mlp).decide(prop_of([(lo, hi, [(a, b)])], 2, 2), 10)
    assert result.answer == SAT
    x, y = result.witness_x, result.witness_y
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert np.all(np.array(lo) <= x.astype(np.float64)) and np.all(x.astype(np.float64) <= np.array(hi))
    assert np.array_equal(run_ort(mlp, x), y)  # the very output onnxruntime computes, bit for bit
    assert np.all(a @ y.astype(np.float64) <= b)  # zero tolerance
    assert result.case == 0


def test_a_tiny_timeout_answers_timeout_quickly(mlp):
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    _, top = output_range(mlp, lo, hi, 0, n=20000)
    prop = prop_of([(lo, hi, [([-1.0, 0.0], [-(top + 1e-4)])])], 2, 2)  # barely unsat: needs deep splitting
    start = time.perf_counter()
    result = Verifier.for_network(mlp).decide(prop, 1e-3)
    assert result.answer == TIMEOUT
    assert time.perf_counter() - start < 0.5


def test_the_deadline_holds_during_a_long_search(mlp):
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    _, top = output_range(mlp, lo, hi, 0, n=20000)
    # unsafe: y0 >= top - 1e-7: (almost surely) sat but hard to hit, or unsat by a hair: a long search
    prop = prop_of([(lo, hi, [([-1.0, 0.0], [-(top + 1e-9)])])], 2, 2)
    start = time.perf_counter()
    result = Verifier.for_network(mlp).decide(prop, 0.8)
    elapsed = time.perf_counter() - start
    assert result.answer in (TIMEOUT, SAT, UNSAT)
    assert elapsed < 0.8 + 0.3


def test_a_row_combination_proves_what_no_single_row_or_their_sum_can(twin):
    # unsafe: y0 >= 0.6, y1 <= 0.4 and y0 <= 5 (always true): weights (1/2, 1/2, 0) prove it, the uniform
    # sum does not, and with splitting disabled nothing else can
    a = np.array([[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    b = np.array([-0.6, 0.4, 5.0])
    prop = prop_of([([-1.0], [2.0], [(a, b)])], 1, 2)
    assert Verifier.for_network(twin, split_max_inputs=0).decide(prop, 10).answer == UNSAT
    assert Verifier.for_network(twin, split_max_inputs=0, lambda_steps=0).decide(prop, 10).answer == UNKNOWN


def test_several_input_boxes_are_decided_together(mlp):
    lo1, hi1, lo2, hi2 = [-1.0, -1.0], [0.0, 1.0], [0.0, -1.0], [1.0, 1.0]
    _, top1 = output_range(mlp, lo1, hi1, 1)
    _, top2 = output_range(mlp, lo2, hi2, 1)
    cases = [(lo1, hi1, [([0.0, -1.0], [-(top1 + 2.0)])]), (lo2, hi2, [([0.0, -1.0], [-(top2 - 0.05)])])]
    result = Verifier.for_network(mlp).decide(prop_of(cases, 2, 2), 10)
    assert result.answer == SAT and result.case == 1
    assert np.all(np.array(lo2) <= result.witness_x) and np.all(result.witness_x <= np.array(hi2))
    cases[1] = (lo2, hi2, [([0.0, -1.0], [-(top2 + 2.0)])])
    assert Verifier.for_network(mlp).decide(prop_of(cases, 2, 2), 10).answer == UNSAT


def test_strict_mode_refuses_a_margin_within_rounding(twin):
    # y0 = relu(x) <= 1 on [0, 1]; unsafe y0 >= 1 + 1e-5 is unreachable by 1e-5 only
    prop = prop_of([([0.0], [1.0], [([-1.0, 0.0], [-(1.0 + 1e-5)])])], 1, 2)
    assert Verifier.for_network(twin, split_max_inputs=0).decide(prop, 5).answer == UNSAT
    strict = Verifier.for_network(twin, split_max_inputs=0, strict=True).decide(prop, 5)
    assert strict.answer == UNKNOWN


def test_no_proof_and_no_witness_for_a_point_without_a_float32_value(twin):
    # x = 0.1 exactly (no float32 equals it): y0 >= 0.1 holds in real arithmetic, so unsat would be wrong,
    # and no float32 input lies in the box, so there is no witness either
    prop = prop_of([([0.1], [0.1], [([-1.0, 0.0], [-0.1])])], 1, 2)
    assert Verifier.for_network(twin).decide(prop, 2).answer in (UNKNOWN, TIMEOUT)


def test_an_empty_conjunction_is_sat_at_any_point_of_the_box(mlp):
    everything = OutputConstraint(np.zeros((0, 2)), [])
    prop = Property(2, 2, [(InputRegion([0.25, 0.5], [0.25, 0.75]), [everything])])
    result = Verifier.for_network(mlp).decide(prop, 5)
    assert result.answer == SAT and result.witness_x[0] == np.float32(0.25)


def test_no_case_means_unsat(mlp):
    assert Verifier.for_network(mlp).decide(Property(2, 2, []), 5).answer == UNSAT


@pytest.mark.parametrize("scale", [1e-3, 1.0, 3e4])
def test_the_dual_box_contains_the_real_box(scale):
    rng = np.random.default_rng(int(scale * 10))
    center = rng.normal(size=(50, 7)) * scale
    width = np.abs(rng.normal(size=(50, 7))) * scale * np.array([0, 1e-12, 1e-9, 1e-7, 1e-3, 1, 10])
    lower, upper = center - width, center + width
    lower[0] = upper[0] = 0.1  # a point that float32 cannot represent
    c, r = dual_box(lower, upper)
    box = Box.ball(torch.from_numpy(c), torch.from_numpy(r))
    bc, br = box.center.double().numpy(), box.radius.double().numpy()
    assert np.all(bc - br <= lower) and np.all(bc + br >= upper)
    exact = (lower == upper) & (lower.astype(np.float32).astype(np.float64) == lower)
    assert np.all(r[exact] == 0)


def test_load_network_reads_gzip_and_rejects_garbage(mlp, tmp_path):
    raw = onnx.load(mlp.source)
    gz = tmp_path / "m.onnx.gz"
    gz.write_bytes(gzip.compress(raw.SerializeToString()))
    net = load_network(gz)
    assert (net.n_inputs, net.n_outputs) == (2, 2)
    bad = tmp_path / "bad.onnx.gz"
    bad.write_bytes(gzip.compress(b"not a model"))
    with pytest.raises(ModelLoadError):
        load_network(bad)
    with pytest.raises(ModelLoadError, match="not found"):
        load_network(tmp_path / "missing.onnx")


def test_unsupported_operators_are_listed_at_load(tmp_path):
    nodes = [helper.make_node("Sin", ["input"], ["s"]), helper.make_node("Softmax", ["s"], ["output"])]
    with pytest.raises(UnsupportedOpsError, match="Sin.*Softmax|Softmax.*Sin"):
        load_network(save(make_model(nodes, [3], [3]), tmp_path / "u.onnx"))


def vector_model(nodes, in_shape, out_shape, inits, path):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return save(m, path)


def test_inputs_without_a_batch_dimension(tmp_path):
    # W @ x with a vector x (as in VNN-COMP's test_tiny), and a transpose of a [1, 2] input whose first
    # dimension is not a batch
    w = np.array([[2.0], [-1.0]], np.float32)
    p1 = vector_model([helper.make_node("MatMul", ["W", "x"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
                      [1], [2], {"W": w}, tmp_path / "wx.onnx")
    net = load_network(p1)
    assert net.example_shape == (1,)
    prop = prop_of([([-1.0], [1.0], [([-1.0, 0.0], [-2.5])])], 1, 2)  # y0 = relu(2x) >= 2.5: unsat
    assert Verifier.for_network(net).decide(prop, 5).answer == UNSAT
    p2 = vector_model([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
                       helper.make_node("Relu", ["t"], ["y"])], [1, 2], [2, 1], {}, tmp_path / "tr.onnx")
    net = load_network(p2)
    prop = prop_of([([0.0, 10.0], [1.0, 11.0], [([0.0, -1.0], [-10.0])])], 2, 2)  # y[1,0] = x[0,1] >= 10: sat
    result = Verifier.for_network(net).decide(prop, 5)
    assert result.answer == SAT and result.witness_y[1] >= 10


# ------------------------------------------------------------------------------------ VNN-LIB 2.0 helpers

QUERY = """(vnnlib-version <2.0>)
(declare-network f
    (declare-input X {t} [1,2])
    (declare-output Y {t} [1,2])
)
(assert (>= X[0,0] -1.0))
(assert (<= X[0,0] 1.0))
(assert (>= X[0,1] -1.0))
(assert (<= X[0,1] 1.0))
(assert (>= Y[0,0] 100.0))
"""


def test_declared_networks_and_error_condition_1():
    decl = declared_networks(QUERY.format(t="float32"))
    assert [d.name for d in decl] == ["f"]
    assert decl[0].inputs[0].element_type == "float32" and decl[0].inputs[0].shape == (1, 2)
    assert match_networks(decl, [("f", "a.onnx")]) == {"f": "a.onnx"}
    assert match_networks(decl, [(None, "a.onnx")]) == {"f": "a.onnx"}
    for given in ([], [("g", "a.onnx")], [("f", "a.onnx"), ("g", "b.onnx")], [("f", "a"), ("f", "b")]):
        with pytest.raises(QueryError) as err:
            match_networks(decl, given)
        assert err.value.condition == 1
    assert declared_networks("(declare-const X_0 Real)") == []
    with pytest.raises(QueryError):
        match_networks([], [("a", "x"), ("b", "y")])
    with pytest.raises(SpecError):
        declared_networks("(vnnlib-version <2.0>) (declare-network f (declare-input X float32 [1]")


def test_error_conditions_2_and_3(mlp):
    nets = {"f": mlp}
    assert check_element_types(declared_networks(QUERY.format(t="Real")), nets, strict=True) == []
    notes = check_element_types(declared_networks(QUERY.format(t="float32")), nets, strict=False)
    assert notes and "real arithmetic" in notes[0]
    with pytest.raises(QueryError) as err:
        check_element_types(declared_networks(QUERY.format(t="float32")), nets, strict=True)
    assert err.value.condition == 3
    with pytest.raises(QueryError) as err:
        check_element_types(declared_networks(QUERY.format(t="float64")), nets, strict=False)
    assert err.value.condition == 2
    with pytest.raises(QueryError) as err:
        check_element_types(declared_networks(QUERY.format(t="float16")), {}, strict=False)
    assert err.value.condition == 3


def test_assignment_formats(tmp_path):
    prop = parse_vnnlib(QUERY.format(t="float32"))
    decl = declared_networks(QUERY.format(t="float32"))
    x, y = np.array([0.5, -0.25], np.float32), np.array([0.1, 2.0], np.float32)
    text = format_assignment(assignment_variables(prop, decl), x, y)
    assert text.splitlines() == ["X float32 [1,2]", "0.5", "-0.25", "Y float32 [1,2]",
                                 repr(float(np.float32(0.1))), "2.0"]
    assert np.float32(float(text.splitlines()[4])) == y[0]  # round-trips exactly
    paths = serialise_assignment(tmp_path / "a", assignment_variables(prop, decl), x, y)
    assert [p.name for p in paths] == ["X.pb", "Y.pb"]
    t = onnx.TensorProto()
    t.ParseFromString(paths[1].read_bytes())
    assert list(t.dims) == [1, 2] and np.array_equal(numpy_helper.to_array(t).reshape(-1), y)
    v1 = Property(1, 2, [])
    text = format_assignment(assignment_variables(v1, []), np.array([1.0]), np.array([2.0, 3.0]))
    assert text.splitlines() == ["X_0 Real []", "1.0", "Y_0 Real []", "2.0", "Y_1 Real []", "3.0"]


def test_deadline():
    d = Deadline(0.05)
    assert not d.passed() and 0 < d.remaining() <= 0.05
    time.sleep(0.06)
    assert d.passed()
    assert Deadline(-1).passed()
