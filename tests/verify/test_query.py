"""onnxdual.verify.query: the VNN-LIB 2.0 standard's error conditions of the ``verify`` command."""

from __future__ import annotations

import pytest

from onnxdual.specs import SpecError, declared_networks
from onnxdual.verify import QueryError, check_element_types, match_networks
from tests.specs.queries import BOX_QUERY

QUERY = BOX_QUERY


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
