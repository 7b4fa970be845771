"""Counterexample text: VNN-COMP list format and the VNN-LIB 2.0 assignment format."""

from __future__ import annotations

import re

import numpy as np
import pytest

from onnxdual.specs import (
    check_io_sizes,
    format_vnncomp_witness,
    format_vnnlib2_assignment,
    is_counterexample,
    parse_vnnlib,
    SpecError,
)


def read_back_like_vnncomp(text: str) -> tuple[list[float], list[float]]:
    """Read a counterexample the way the VNN-COMP 2022 scorer does (flatten, strip outer parens, split
    on ')', 'name value' on one space, indices in order)."""
    content = text.replace("\n", " ").strip()
    assert content[0] == "(" and content[-1] == ")"
    xs, ys = [], []
    for part in content[1:-1].split(")"):
        part = part.strip()
        if not part:
            continue
        assert part[0] == "("
        name, num = part[1:].split(" ")
        target = xs if name.startswith("X_") else ys
        assert name[:2] in ("X_", "Y_") and int(name[2:]) == len(target)
        target.append(float(num))
    return xs, ys


def test_vnncomp_witness_layout():
    text = format_vnncomp_witness([0.1, -2.0], [3.5])
    assert text == "((X_0 0.1)\n (X_1 -2.0)\n (Y_0 3.5))"
    assert format_vnncomp_witness([0.1], [1.0], with_status_line=True).startswith("sat\n((X_0 0.1)")


def test_vnncomp_witness_round_trips_exactly():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 3, 4)).astype(np.float32)  # any shape: flattened row-major
    y = np.array([1e-30, -0.0, 12345.678, np.finfo(np.float64).max])
    xs, ys = read_back_like_vnncomp(format_vnncomp_witness(x, y))
    assert np.array_equal(np.float32(xs), x.reshape(-1)) and np.array_equal(np.float64(xs), x.reshape(-1))
    assert np.array_equal(np.array(ys), y)
    lines = format_vnncomp_witness(x, y)[1:-1].split("\n")
    assert all(re.fullmatch(r"\(([XY])_\d+ \S+\)", line.strip()) for line in lines)


def test_vnnlib2_assignment_defaults_and_scalars():
    assert format_vnnlib2_assignment([1.0, 2.0], [0.5]) == "X[0]=1.0\nX[1]=2.0\nY[0]=0.5"
    text = format_vnnlib2_assignment([[1.0, 2.0], [3.0, 4.0]], 7.0, input_name="img", output_name="score",
                                     input_shape=(2, 2), output_shape=(), with_status_line=True)
    assert text == "sat\nimg[0,0]=1.0\nimg[0,1]=2.0\nimg[1,0]=3.0\nimg[1,1]=4.0\nscore=7.0"
    with pytest.raises(ValueError, match="shape"):
        format_vnnlib2_assignment([1.0, 2.0, 3.0], [0.0], input_shape=(2, 2))


def test_vnnlib2_assignment_for_a_v1_property_is_flat():
    prop = parse_vnnlib("(declare-const X_0 Real) (declare-const Y_0 Real)\n"
                        "(assert (<= 0 X_0 1)) (assert (<= Y_0 0))")
    assert format_vnnlib2_assignment([0.5], [-1.0], prop) == "X[0]=0.5\nY[0]=-1.0"


def test_is_counterexample_and_io_size_check():
    prop = parse_vnnlib("""(declare-const X_0 Real) (declare-const Y_0 Real) (declare-const Y_1 Real)
        (assert (or (and (<= 0 X_0 1) (>= Y_0 Y_1)) (and (<= 2 X_0 3) (>= Y_1 5))))""")
    assert is_counterexample(prop, [0.5], [2.0, 1.0])
    assert not is_counterexample(prop, [2.5], [2.0, 1.0])  # right output, wrong box
    assert is_counterexample(prop, [2.5], [0.0, 5.0])
    assert not is_counterexample(prop, [1.5], [2.0, 6.0])  # between the boxes
    check_io_sizes(prop, 1, 2)
    with pytest.raises(SpecError, match="1 input variables but net.onnx takes 784 values"):
        check_io_sizes(prop, 784, 2, network="net.onnx")
