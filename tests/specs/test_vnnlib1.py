"""VNN-LIB 1.0 parsing on small hand-written files (tests/specs/data) and inline text."""

from __future__ import annotations

import gzip
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from onnxdual.errors import OnnxDualError
from onnxdual.specs import (
    InputRegion,
    OutputConstraint,
    Property,
    SpecError,
    detect_version,
    input_in_region,
    is_violated,
    parse_vnnlib,
)

DATA = Path(__file__).resolve().parent / "data"


def rows(constraint: OutputConstraint) -> set[tuple]:
    """The conjunction as a set of (row..., rhs) tuples (order-independent comparison)."""
    return {tuple(a) + (b,) for a, b in zip(constraint.A.tolist(), constraint.b.tolist())}


def test_plain_box_single_output_constraint():
    prop = parse_vnnlib(DATA / "box_single.vnnlib")
    assert isinstance(prop, Property)
    assert (prop.n_inputs, prop.n_outputs, prop.version) == (2, 2, "1.0")
    assert prop.source.endswith("box_single.vnnlib")
    assert len(prop.cases) == 1
    region, conjunctions = prop.cases[0]
    assert isinstance(region, InputRegion)
    assert region.lower.dtype == np.float64 and region.lower.shape == (2,)
    np.testing.assert_array_equal(region.lower, [-1.0, 0.0])
    np.testing.assert_array_equal(region.upper, [1.0, 0.5])
    assert len(conjunctions) == 1
    assert conjunctions[0].A.shape == (1, 2) and conjunctions[0].A.dtype == np.float64
    assert rows(conjunctions[0]) == {(1.0, -1.0, 0.0)}  # Y_1 >= Y_0  <=>  Y_0 - Y_1 <= 0


def test_path_as_str_and_text_give_the_same_property():
    path = DATA / "box_single.vnnlib"
    a = parse_vnnlib(str(path))
    b = parse_vnnlib(path.read_text())
    assert b.source == "<string>"
    np.testing.assert_array_equal(a.cases[0][0].lower, b.cases[0][0].lower)
    np.testing.assert_array_equal(a.cases[0][1][0].A, b.cases[0][1][0].A)


def test_gzip_file(tmp_path):
    gz = tmp_path / "p.vnnlib.gz"
    gz.write_bytes(gzip.compress((DATA / "box_single.vnnlib").read_bytes()))
    prop = parse_vnnlib(gz)
    np.testing.assert_array_equal(prop.cases[0][0].upper, [1.0, 0.5])


def test_disjunction_of_conjunctions():
    prop = parse_vnnlib(DATA / "disjunction.vnnlib")
    assert len(prop.cases) == 1
    region, conjunctions = prop.cases[0]
    np.testing.assert_array_equal(region.lower, [-0.25])
    np.testing.assert_array_equal(region.upper, [0.25])
    assert [rows(c) for c in conjunctions] == [
        {(-1.0, 1.0, 0.0, 0.0)},  # Y_0 >= Y_1
        {(0.0, 1.0, -1.0, 0.0), (1.0, 0.0, 0.0, -0.1)},  # Y_2 >= Y_1 and Y_0 <= -0.1
    ]
    assert is_violated(prop, 0, [1.0, 0.5, 0.0])  # first conjunction
    assert is_violated(prop, 0, [-0.2, 0.5, 0.6])  # second conjunction
    assert not is_violated(prop, 0, [0.0, 0.5, 0.6])  # Y_0 > -0.1 and Y_0 < Y_1
    assert is_violated(prop, 0, [0.5, 0.5, 0.0])  # boundary counts (zero tolerance, closed)


def test_mixed_input_and_output_disjuncts_group_into_cases():
    prop = parse_vnnlib(DATA / "mixed_io.vnnlib")
    assert len(prop.cases) == 2  # two distinct input boxes
    (r0, c0), (r1, c1) = prop.cases
    np.testing.assert_array_equal(r0.lower, [0.0, 0.0])
    np.testing.assert_array_equal(r0.upper, [1.0, 2.0])  # X_1 <= 2 comes from the common assertion
    assert [rows(c) for c in c0] == [{(1.0, -1.0, 0.0)}, {(-1.0, 0.0, -10.0)}]
    np.testing.assert_array_equal(r1.lower, [-3.0, 1.0])
    np.testing.assert_array_equal(r1.upper, [-2.0, 2.0])
    assert [rows(c) for c in c1] == [{(0.0, 1.0, -5.0)}]
    assert input_in_region(r1, [-2.5, 1.5]) and not input_in_region(r0, [-2.5, 1.5])


def test_separate_input_disjunction_times_output_disjunction():
    """ACAS Xu prop_6 shape: an 'or' of input boxes and, in another assert, an 'or' over outputs."""
    text = """
    (declare-const X_0 Real) (declare-const Y_0 Real) (declare-const Y_1 Real)
    (assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3))))
    (assert (or (and (<= Y_1 Y_0)) (and (>= Y_1 7))))
    """
    prop = parse_vnnlib(text)
    assert len(prop.cases) == 2
    for (region, conjunctions), lo in zip(prop.cases, (0.0, 2.0)):
        assert region.lower[0] == lo and region.upper[0] == lo + 1
        assert [rows(c) for c in conjunctions] == [{(-1.0, 1.0, 0.0)}, {(0.0, -1.0, -7.0)}]


def test_disjunct_with_redundant_input_bound_shares_the_case():
    prop = parse_vnnlib("""(declare-const X_0 Real) (declare-const Y_0 Real)
        (assert (<= 0 X_0 1))
        (assert (or (and (<= Y_0 0)) (and (<= X_0 2) (>= Y_0 5))))""")
    (region, conjunctions), = prop.cases
    assert (region.lower[0], region.upper[0]) == (0.0, 1.0) and len(conjunctions) == 2


def test_equality_and_chained_comparison():
    prop = parse_vnnlib(DATA / "equality.vnnlib")
    region, conjunctions = prop.cases[0]
    np.testing.assert_array_equal(region.lower, [0.5, -1.0])
    np.testing.assert_array_equal(region.upper, [0.5, 1.0])
    assert len(conjunctions) == 1
    assert rows(conjunctions[0]) == {(1.0, -1.0, 0.0), (-1.0, 1.0, 0.0)}  # Y_0 = Y_1: two inequalities
    assert is_violated(prop, 0, [3.0, 3.0]) and not is_violated(prop, 0, [3.0, 3.0000001])


def test_linear_terms():
    prop = parse_vnnlib(DATA / "linear_terms.vnnlib")
    region, conjunctions = prop.cases[0]
    np.testing.assert_array_equal(region.lower, [-2.0])  # 2*X_0 >= -4
    np.testing.assert_array_equal(region.upper, [-1.5])  # X_0 <= (- 1.5)
    got = [rows(c) for c in conjunctions]
    assert got[0] == {(1.0, -1.0, 0.0, 0.5)}  # Y_0 - Y_1 <= 0.5
    assert got[1] == {(1.0, 0.25, -1.0, -1.0)}  # Y_2 - Y_0 - 1 >= Y_1/4  <=>  Y_0 + Y_1/4 - Y_2 <= -1
    (row,) = got[2]  # 3*(Y_0 - Y_2) < 0.6, closed
    np.testing.assert_allclose(row, (3.0, 0.0, -3.0, 0.6))


def test_scaled_bounds_are_rounded_outward():
    prop = parse_vnnlib("""(declare-const X_0 Real) (declare-const Y_0 Real)
        (assert (<= (* 3 X_0) 1)) (assert (>= (* 3 X_0) -1)) (assert (<= Y_0 0))""")
    region = prop.cases[0][0]
    # exactly outward: the float bounds enclose [-1/3, 1/3], and by no more than one ulp
    assert Fraction(region.upper[0]) >= Fraction(1, 3) and Fraction(region.lower[0]) <= Fraction(-1, 3)
    assert region.upper[0] - 1 / 3 < 1e-15 and region.lower[0] + 1 / 3 > -1e-15


def test_comments_scientific_notation_strict_and_smtlib_commands():
    prop = parse_vnnlib(DATA / "comments.vnnlib")
    region, conjunctions = prop.cases[0]
    assert region.lower[0] == -2.5e-3 and region.upper[0] == 150.0  # the commented-out bound is ignored
    assert rows(conjunctions[0]) == {(-1.0, -10.0)}  # Y_0 > 10 read as Y_0 >= 10
    assert is_violated(prop, 0, [10.0]) and not is_violated(prop, 0, [9.999])


def test_number_first_and_negative_literals():
    prop = parse_vnnlib("""(declare-const X_0 Real) (declare-const Y_0 Real)
        (assert (<= -0.5 X_0)) (assert (>= .75 X_0)) (assert (< Y_0 -3))""")
    region, conjunctions = prop.cases[0]
    assert (region.lower[0], region.upper[0]) == (-0.5, 0.75)
    assert rows(conjunctions[0]) == {(1.0, -3.0)}


def test_not_is_pushed_inward_and_closed():
    prop = parse_vnnlib("""(declare-const X_0 Real) (declare-const Y_0 Real) (declare-const Y_1 Real)
        (assert (and (>= X_0 0) (<= X_0 1)))
        (assert (not (and (< Y_0 Y_1) (<= Y_1 2))))""")
    conjunctions = prop.cases[0][1]
    assert [rows(c) for c in conjunctions] == [{(-1.0, 1.0, 0.0)}, {(0.0, -1.0, -2.0)}]


def test_no_output_constraint_means_every_output_is_unsafe():
    prop = parse_vnnlib("(declare-const X_0 Real) (declare-const Y_0 Real) (assert (<= 0 X_0 1))")
    (region, conjunctions), = prop.cases
    assert len(conjunctions) == 1 and conjunctions[0].A.shape == (0, 1)
    assert is_violated(prop, 0, [123.0])


def test_contradictory_constant_assertion_gives_no_cases():
    prop = parse_vnnlib("(declare-const X_0 Real) (declare-const Y_0 Real)\n"
                        "(assert (<= 0 X_0 1)) (assert (<= 1 0))")
    assert prop.cases == []


def test_declaration_order_does_not_matter():
    prop = parse_vnnlib("""(declare-const Y_0 Real) (declare-const X_1 Real) (declare-const X_0 Real)
        (assert (<= 0 X_0 1)) (assert (<= 2 X_1 3)) (assert (>= Y_0 0))""")
    np.testing.assert_array_equal(prop.cases[0][0].lower, [0.0, 2.0])


def test_detect_version():
    assert detect_version((DATA / "box_single.vnnlib").read_text()) == "1.0"
    assert detect_version((DATA / "small_v2.vnnlib").read_text()) == "2.0"
    assert detect_version("; (declare-network f)\n(declare-const X_0 Real)") == "1.0"


def test_spec_error_is_an_onnxdual_error():
    assert issubclass(SpecError, OnnxDualError)


def test_input_in_region_and_is_violated_checks():
    region = InputRegion(np.array([0.0, -1.0]), np.array([1.0, 1.0]))
    assert input_in_region(region, [0.0, 1.0])
    assert not input_in_region(region, [1.0000001, 0.0])
    assert not input_in_region(region, [np.nan, 0.0])
    with pytest.raises(ValueError):
        input_in_region(region, [0.0])
    prop = Property(2, 1, [(region, [OutputConstraint(np.array([[1.0]]), np.array([0.0]))])])
    assert is_violated(prop, 0, np.float32([0.0]))
    assert not is_violated(prop, 0, [1e-300])
    empty = Property(2, 1, [(region, [])])
    assert not is_violated(empty, 0, [0.0])
