"""Malformed or unsupported properties raise SpecError with a one-line message naming file and line/term."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxdual.specs import SpecError, parse_vnnlib

DATA = Path(__file__).resolve().parent / "data"

HEAD = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX = "(assert (<= X_0 1.0))\n(assert (>= X_0 0.0))\n"


def error_of(source) -> str:
    with pytest.raises(SpecError) as info:
        parse_vnnlib(source)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_unreadable_file(tmp_path):
    missing = tmp_path / "nope.vnnlib"
    msg = error_of(missing)
    assert str(missing) in msg and "not found" in msg


def test_directory_is_unreadable(tmp_path):
    assert "is a directory" in error_of(tmp_path)


def test_unbalanced_parentheses_names_file_and_line():
    msg = error_of(DATA / "bad_unbalanced.vnnlib")
    assert "bad_unbalanced.vnnlib:4:" in msg and "unbalanced parentheses" in msg


def test_stray_closing_parenthesis():
    msg = error_of(HEAD + BOX + "(assert (>= Y_0 1.0)))\n")
    assert msg.startswith("<string>:6:") and "')'" in msg


def test_unknown_variable():
    msg = error_of(DATA / "bad_unknown_var.vnnlib")
    assert "bad_unknown_var.vnnlib:5:" in msg and "unknown variable Y_3" in msg


def test_unknown_symbol():
    assert "unknown symbol 'foo'" in error_of(HEAD + BOX + "(assert (>= Y_0 foo))")


def test_unbounded_input():
    msg = error_of(DATA / "bad_unbounded.vnnlib")
    assert "bad_unbounded.vnnlib" in msg and "unbounded input: X_1 has no upper bound" in msg


def test_input_never_constrained_is_unbounded():
    msg = error_of("(declare-const X_0 Real) (declare-const X_1 Real) (declare-const Y_0 Real)\n"
                   "(assert (<= 0 X_0 1)) (assert (<= Y_0 0))")
    assert "X_1 has no lower bound" in msg


def test_unbounded_in_one_input_disjunct_only():
    msg = error_of(HEAD + "(assert (or (and (<= X_0 1) (>= X_0 0)) (and (<= X_0 5))))\n(assert (<= Y_0 0))")
    assert "X_0 has no lower bound" in msg and "input disjunct 2 of 2" in msg


def test_nonlinear_product_of_variables():
    msg = error_of(DATA / "bad_nonlinear.vnnlib")
    assert "bad_nonlinear.vnnlib:6:" in msg and "non-linear" in msg and "Y_0 * Y_1" in msg


def test_division_by_variable_is_nonlinear():
    assert "non-linear" in error_of(HEAD + BOX + "(assert (>= (/ Y_0 Y_1) 1.0))")


def test_unsupported_arithmetic_operator():
    assert "unsupported arithmetic operator 'exp'" in error_of(HEAD + BOX + "(assert (>= (exp Y_0) 1.0))")


def test_mixing_inputs_and_outputs_in_one_inequality():
    msg = error_of(HEAD + BOX + "(assert (<= Y_0 X_0))")
    assert msg.startswith("<string>:6:") and "mixing input and output" in msg
    assert "X_0" in msg and "Y_0" in msg


def test_input_constraint_over_several_inputs_is_not_a_box():
    msg = error_of("(declare-const X_0 Real) (declare-const X_1 Real) (declare-const Y_0 Real)\n"
                   "(assert (<= 0 X_0 1)) (assert (<= 0 X_1 1))\n"
                   "(assert (<= (+ X_0 X_1) 1)) (assert (<= Y_0 0))")
    assert "several inputs" in msg and msg.startswith("<string>:3:")


def test_unsupported_command():
    msg = error_of(HEAD + BOX + "(define-fun f () Real 1.0)\n")
    assert msg.startswith("<string>:6:") and "unsupported command 'define-fun'" in msg


def test_unsupported_formula_operator():
    assert "unsupported operator '=>'" in error_of(HEAD + BOX + "(assert (=> (<= Y_0 0) (<= Y_1 0)))")


def test_bad_declarations():
    assert "unsupported sort 'Int'" in error_of("(declare-const X_0 Int)")
    assert "unsupported variable name 'Z'" in error_of("(declare-const Z Real)")
    assert "declared twice" in error_of("(declare-const X_0 Real) (declare-const X_0 Real)")
    assert "unsupported variable name 'X_01'" in error_of("(declare-const X_01 Real)")
    assert "X_1 is not declared although X_2 is" in error_of(
        "(declare-const X_0 Real) (declare-const X_2 Real) (declare-const Y_0 Real)")


def test_empty_input_box():
    msg = error_of(HEAD + "(assert (<= X_0 0.0))\n(assert (>= X_0 1.0))\n(assert (<= Y_0 0))")
    assert "empty input box" in msg and "X_0" in msg


def test_top_level_atom_and_unterminated_string():
    assert "unexpected token 'hello'" in error_of("hello (declare-const X_0 Real)")
    assert "unterminated string" in error_of('(set-info :source "abc)\n')


def test_assert_with_two_formulas():
    assert "exactly one formula" in error_of(HEAD + "(assert (<= X_0 1) (>= X_0 0))")
