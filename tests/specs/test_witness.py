"""Counterexample text: the VNN-COMP list format and the VNN-LIB 2.0 standard's assignment formats (text and
serialised)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxdual.errors import InvalidInputError
from onnxdual.specs import (
    Property,
    SpecError,
    assignment_variables,
    check_io_sizes,
    declared_networks,
    format_vnncomp_witness,
    format_vnnlib2_assignment,
    is_counterexample,
    parse_vnnlib,
    serialise_assignment,
)
from tests.specs.queries import BOX_QUERY


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


QUERY = BOX_QUERY.format(t="float32")


def test_vnnlib2_assignment_has_a_header_per_variable_then_row_major_values():
    prop, decl = parse_vnnlib(QUERY), declared_networks(QUERY)
    x, y = np.array([0.5, -0.25], np.float32), np.array([0.1, 2.0], np.float32)
    text = format_vnnlib2_assignment(assignment_variables(prop, decl), x, y)
    assert text.splitlines() == ["X float32 [1,2]", "0.5", "-0.25", "Y float32 [1,2]",
                                 repr(float(np.float32(0.1))), "2.0"]
    assert np.float32(float(text.splitlines()[4])) == y[0]  # round-trips exactly


def test_vnnlib2_assignment_for_a_v1_property_lists_scalars():
    v1 = Property(1, 2, [])
    text = format_vnnlib2_assignment(assignment_variables(v1, []), np.array([1.0]), np.array([2.0, 3.0]))
    assert text.splitlines() == ["X_0 Real []", "1.0", "Y_0 Real []", "2.0", "Y_1 Real []", "3.0"]


def test_vnnlib2_assignment_refuses_a_wrong_number_of_values():
    prop, decl = parse_vnnlib(QUERY), declared_networks(QUERY)
    with pytest.raises(InvalidInputError, match="3 values"):
        format_vnnlib2_assignment(assignment_variables(prop, decl), np.zeros(2), np.zeros(1))


def test_serialised_assignment_is_one_tensor_proto_per_variable(tmp_path):
    prop, decl = parse_vnnlib(QUERY), declared_networks(QUERY)
    x, y = np.array([0.5, -0.25], np.float32), np.array([0.1, 2.0], np.float32)
    paths = serialise_assignment(tmp_path / "a", assignment_variables(prop, decl), x, y)
    assert [p.name for p in paths] == ["X.pb", "Y.pb"]
    tensor = onnx.TensorProto()
    tensor.ParseFromString(paths[1].read_bytes())
    assert list(tensor.dims) == [1, 2] and np.array_equal(numpy_helper.to_array(tensor).reshape(-1), y)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InvalidInputError, match="cannot create"):
        serialise_assignment(blocker / "sub", assignment_variables(prop, decl), x, y)


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
