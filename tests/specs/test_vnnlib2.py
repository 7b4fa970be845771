"""VNN-LIB 2.0 queries, read through the reference parser (PyPI ``vnnlib``) plus our own DNF assembly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxdual.specs import SpecError, is_violated, parse_vnnlib

pytest.importorskip("vnnlib", reason="VNN-LIB 2.0 support needs the 'vnnlib' package")

DATA = Path(__file__).resolve().parent / "data"


def rows(constraint) -> set[tuple]:
    return {tuple(a) + (b,) for a, b in zip(constraint.A.tolist(), constraint.b.tolist())}


def net(body: str, header: str = "(vnnlib-version <2.0>)\n") -> str:
    decl = "(declare-network f\n  (declare-input X float32 [2])\n  (declare-output Y float32 [2]))\n"
    return header + decl + body


BOX2 = "(assert (and (<= X[0] 1.0) (>= X[0] 0.0) (<= X[1] 1.0) (>= X[1] 0.0)))\n"


def test_small_hand_written_query():
    prop = parse_vnnlib(DATA / "small_v2.vnnlib")
    assert prop.version == "2.0"
    assert (prop.n_inputs, prop.n_outputs) == (4, 3)
    assert (prop.input_shape, prop.output_shape) == ((1, 2, 2), (1, 3))
    assert (prop.input_name, prop.output_name) == ("X", "Y")
    assert len(prop.cases) == 1
    region, conjunctions = prop.cases[0]
    # row-major flattening: X[0,0,0], X[0,0,1], X[0,1,0], X[0,1,1]
    np.testing.assert_array_equal(region.lower, [-1.0, 0.0, 0.25, -2.0])
    np.testing.assert_array_equal(region.upper, [1.0, 0.5, 0.25, 3.0])
    common = (0.0, -1.0, 6.0, -1.0)  # 6*Y2 <= Y1 - 1, conjoined into every disjunct
    assert [rows(c) for c in conjunctions] == [
        {common, (-1.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 3.0)},  # Y0 >= Y1 and Y2 <= 3
        {common, (-1.0, 1.0, 0.0, 1.5)},  # Y1 - Y0 - 1.5 < 0, closed
    ]
    assert is_violated(prop, 0, [5.0, 4.0, 0.0])
    assert not is_violated(prop, 0, [0.0, 4.0, 0.0])


def test_all_input_bounds_in_separate_or_is_not_dropped():
    """vnnlib.compat.transform splits this into a box without outputs and outputs without a box."""
    prop = parse_vnnlib(net(BOX2 + "(assert (or (>= Y[0] Y[1]) (<= Y[1] -1.0)))\n"))
    assert len(prop.cases) == 1
    region, conjunctions = prop.cases[0]
    np.testing.assert_array_equal(region.lower, [0.0, 0.0])
    np.testing.assert_array_equal(region.upper, [1.0, 1.0])
    assert [rows(c) for c in conjunctions] == [{(-1.0, 1.0, 0.0)}, {(0.0, 1.0, -1.0)}]


def test_input_disjuncts_form_cases():
    prop = parse_vnnlib(net(
        "(assert (or (and (<= X[0] 1.0) (>= X[0] 0.0) (<= X[1] 1.0) (>= X[1] 0.0) (>= Y[0] 1.0))\n"
        "            (and (<= X[0] 3.0) (>= X[0] 2.0) (<= X[1] 1.0) (>= X[1] 0.0) (<= Y[1] 0.0))))\n"))
    assert [r.lower.tolist() for r, _ in prop.cases] == [[0.0, 0.0], [2.0, 0.0]]
    assert [[rows(c) for c in cs] for _, cs in prop.cases] == [[{(-1.0, 0.0, -1.0)}], [{(0.0, 1.0, 0.0)}]]


def test_missing_version_header_scientific_notation_and_single_equals():
    prop = parse_vnnlib(net("(assert (and (<= X[0] 1e-3) (>= X[0] -2.5E-1) (= X[1] 0.5)))\n"
                            "(assert (>= Y[0] 1e2))\n", header=""))
    region, conjunctions = prop.cases[0]
    assert region.upper[0] == 0.001 and region.lower[0] == -0.25
    assert region.lower[1] == region.upper[1] == 0.5
    assert rows(conjunctions[0]) == {(-1.0, 0.0, -100.0)}


def test_scalar_shapes_and_multi_dim_labels_in_errors():
    text = ("(vnnlib-version <2.0>)\n(declare-network f (declare-input X Real [2,3]) "
            "(declare-output Y Real [1]))\n(assert (<= X[0,0] 1.0))\n(assert (>= Y[0] 0.0))\n")
    with pytest.raises(SpecError, match=r"unbounded input: X\[0,0\] has no lower bound"):
        parse_vnnlib(text)


@pytest.mark.parametrize(
    "body, expected",
    [
        (BOX2 + "(assert (!= Y[0] 1.0))\n", r"<string>:6: unsupported comparison '!='"),
        (BOX2 + "(assert (>= Z[0] 1.0))\n", r"<string>:6: Undeclared variable at 'Z'"),
        (BOX2 + "(assert (>= Y[5] 1.0))\n", r"<string>:6: Index out of bounds"),
        (BOX2 + "(assert (>= Y[0] 1))\n", r"<string>:6: Type mismatch"),
        (BOX2 + "(assert (>= Y[0] 1.0)\n", r"<string>:\d+: Parse error"),
        ("(assert (<= X[0] 1.0))\n", r"unbounded input: X\[0\] has no lower bound"),
    ],
)
def test_errors(body, expected):
    with pytest.raises(SpecError, match=expected) as info:
        parse_vnnlib(net(body))
    assert "\n" not in str(info.value)


def test_beyond_one_box_and_linear_outputs_is_a_joint_property():
    """Several inputs, hidden nodes, several networks, products and mixed constraints: the joint form
    (onnxdual.specs.joint); what stays plain keeps its declared shapes and no layout."""
    plain = parse_vnnlib(net(BOX2 + "(assert (>= Y[0] 1.0))\n"))
    assert plain.joint is None and plain.output_shape == (2,)
    two_inputs = ("(vnnlib-version <2.0>)\n(declare-network f (declare-input A float32 [1]) "
                  "(declare-input B float32 [1]) (declare-output Y float32 [1]))\n"
                  "(assert (and (>= A[0] 0.0) (<= A[0] 1.0)))\n"
                  "(assert (and (>= B[0] 2.0) (<= B[0] 3.0)))\n(assert (>= Y[0] 1.0))\n")
    prop = parse_vnnlib(two_inputs)
    assert [t.name for t in prop.joint.networks[0].inputs] == ["A", "B"] and prop.joint.terms == ()
    region, _ = prop.cases[0]
    assert region.lower.tolist() == [0.0, 2.0] and region.upper.tolist() == [1.0, 3.0]
    hidden = ("(vnnlib-version <2.0>)\n(declare-network f (declare-input X float32 [1]) "
              "(declare-hidden H float32 [2] \"h\") (declare-output Y float32 [1]))\n"
              "(assert (and (>= X[0] 0.0) (<= X[0] 1.0)))\n"
              "(assert (>= H[1] (+ X[0] 0.5)))\n")
    prop = parse_vnnlib(hidden)
    # joint output: Y[0], H[0], H[1], then the copy of X[0] (an input in a constraint not bounding it alone)
    assert prop.joint.networks[0].hidden[0].onnx_name == "h" and prop.joint.terms == ((0,),)
    assert rows(prop.cases[0][1][0]) == {(0.0, 0.0, -1.0, 1.0, -0.5)}
    two_nets = ("(vnnlib-version <2.0>)\n"
                "(declare-network f (declare-input X float32 [1]) (declare-output Y float32 [1]))\n"
                "(declare-network g (equal-to f) (declare-input U float32 [1])\n"
                "  (declare-output V float32 [1]))\n"
                "(assert (and (>= X[0] 0.0) (<= X[0] 1.0)))\n(assert (and (>= U[0] 0.0) (<= U[0] 1.0)))\n"
                "(assert (<= (* 2.0 Y[0] V[0]) Y[0]))\n")
    prop = parse_vnnlib(two_nets)
    assert [(n.name, n.model) for n in prop.joint.networks] == [("f", "f"), ("g", "f")]
    # V = (X, U, Y, V): the product Y*V is term (2, 3), output column 2; 2*Y*V - Y <= 0
    assert prop.joint.terms == ((2, 3),) and rows(prop.cases[0][1][0]) == {(-1.0, 0.0, 2.0, 0.0)}
    squares = parse_vnnlib(net(BOX2 + "(assert (>= (* (+ X[0] Y[0]) (- X[1] Y[1])) 1.0))\n"))
    assert set(squares.joint.terms) == {(0, 1), (0, 3), (1, 2), (2, 3)}


def test_lower_case_real_is_the_reference_parsers_spelling_of_real():
    """vnnlib 1.0.2 types ``real`` as its DType.Real (and ``Real`` as Unknown, which then fails to type
    products with float constants): both are accepted and declared Real."""
    from onnxdual.specs import declared_networks

    text = ("(vnnlib-version <2.0>)\n(declare-network f (declare-input X real [2]) (declare-output Y real [1]))\n"
            + BOX2 + "(assert (>= (* 2.0 Y[0] X[1]) 1.0))\n")
    prop = parse_vnnlib(text)
    assert prop.joint.terms == ((2, 1),) or prop.joint.terms == ((1, 2),)
    (decl,) = declared_networks(text)
    assert [v.element_type for v in decl.variables] == ["Real", "Real"]
    with pytest.raises(SpecError, match="unknown element type 'reals'"):
        parse_vnnlib(text.replace("real", "reals").replace("(* 2.0 Y[0] X[1])", "Y[0]"))


def test_strict_comparisons_are_closed_for_proofs_and_strict_for_witnesses():
    prop = parse_vnnlib(net(BOX2 + "(assert (or (< Y[0] 0.0) (> Y[1] 1.0) (<= Y[0] -1.0)))\n"))
    (_, conjunctions), = prop.cases
    assert [c.strict.tolist() for c in conjunctions] == [[True], [True], [False]]
    assert [rows(c) for c in conjunctions] == [{(1.0, 0.0, 0.0)}, {(0.0, -1.0, -1.0)}, {(1.0, 0.0, -1.0)}]
    assert not is_violated(prop, 0, [0.0, 0.5])  # Y[0] = 0 is not < 0
    assert is_violated(prop, 0, [-1e-300, 0.5])
    assert not is_violated(prop, 0, [0.5, 1.0]) and is_violated(prop, 0, [0.5, np.nextafter(1.0, 2.0)])
    assert is_violated(prop, 0, [-1.0, 0.5])  # a non-strict row holds on its boundary


def test_a_strict_constant_comparison_is_decided_strictly():
    assert parse_vnnlib(net(BOX2 + "(assert (< 1.0 1.0))\n")).cases == []  # never holds: nothing unsafe
    assert len(parse_vnnlib(net(BOX2 + "(assert (<= 1.0 1.0))\n(assert (<= Y[0] 0.0))\n")).cases) == 1


def test_strict_and_inexact_input_bounds_shrink_the_witness_box_only():
    from fractions import Fraction

    from onnxdual.specs import input_in_region
    body = ("(assert (and (< X[0] 1.0) (> X[0] 0.0) (<= (* 3.0 X[1]) 1.0) (>= (* 3.0 X[1]) -1.0)))\n"
            "(assert (<= Y[0] 0.0))\n")
    (region, _), = parse_vnnlib(net(body)).cases
    np.testing.assert_array_equal(region.lower[:1], [0.0])  # proofs cover the closure
    np.testing.assert_array_equal(region.upper[:1], [1.0])
    assert region.witness_upper[0] == np.nextafter(1.0, 0.0) and region.witness_lower[0] == np.nextafter(0.0, 1.0)
    assert Fraction(region.upper[1]) * 3 > 1 and Fraction(region.lower[1]) * 3 < -1  # outwards: sound box
    assert Fraction(region.witness_upper[1]) * 3 <= 1 and Fraction(region.witness_lower[1]) * 3 >= -1
    assert Fraction(np.nextafter(region.witness_upper[1], 1.0)) * 3 > 1  # the largest such value
    assert not input_in_region(region, [1.0, 0.0]) and not input_in_region(region, [0.5, region.upper[1]])
    assert input_in_region(region, [0.5, region.witness_upper[1]])


def test_version_1_reads_strict_comparisons_as_closed():
    prop = parse_vnnlib("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (< X_0 1.0))\n"
                        "(assert (>= X_0 0.0))\n(assert (< Y_0 0.0))\n")
    (region, (c,)), = prop.cases
    assert not c.strict.any() and region.witness_upper[0] == 1.0
    assert is_violated(prop, 0, [0.0])
