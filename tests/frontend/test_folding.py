"""Constant folding (issue 13.1): values that do not depend on the input's values become initializers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxdual
from onnxdual.frontend.folding import fold_constants
from tests.onnx_builders import make_model, run_ort

rng = np.random.default_rng(0)


def _ops(model):
    return [n.op_type for n in model.graph.node]


def _shape_chain_reshape(opset):
    """``x.view(x.size(0), -1)`` as the legacy exporter writes it with a free batch axis."""
    return [
        helper.make_node("Shape", ["input"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        *([helper.make_node("Unsqueeze", ["n", "axes"], ["n1"])] if opset >= 13
          else [helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0])]),
        helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["input", "target"], ["output"]),
    ]


@pytest.mark.parametrize("opset", [11, 13, 17, 19])
def test_shape_arithmetic_of_a_free_batch_folds_into_a_batch_copy(dual_check, opset):
    inits = {"zero": np.array(0, dtype=np.int64), "minus_one": np.array([-1], dtype=np.int64),
             "axes": np.array([0], dtype=np.int64)}
    if opset < 13:
        inits.pop("axes")
    model = make_model(_shape_chain_reshape(opset), [2, 3], [6], inits, opset=opset)
    folded = fold_constants(model)
    assert _ops(folded) == ["Reshape"]
    assert folded.graph.node[0].input[1].endswith("__onnxdual_folded")
    target = next(t for t in folded.graph.initializer if t.name == folded.graph.node[0].input[1])
    assert list(numpy_helper.to_array(target)) == [0, -1]  # copy the batch, whatever its size
    dual_check(model, rng.normal(size=(3, 2, 3)), exact=True)


def test_constant_subgraphs_fold(dual_check):
    """ConstantOfShape, Range, Cast, Equal, Where and Expand of constants feeding the variable path."""
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["ones"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("Range", ["start", "limit", "delta"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        helper.make_node("Equal", ["r", "two"], ["is_two"]),
        helper.make_node("Where", ["is_two", "ones", "rf"], ["w"]),
        helper.make_node("Expand", ["w", "wide"], ["scale"]),
        helper.make_node("Mul", ["input", "scale"], ["output"]),
    ]
    inits = {"shape": np.array([4], dtype=np.int64), "start": np.array(0, dtype=np.int64),
             "limit": np.array(4, dtype=np.int64), "delta": np.array(1, dtype=np.int64),
             "two": np.array(2, dtype=np.int64), "wide": np.array([3, 4], dtype=np.int64)}
    model = make_model(nodes, [3, 4], [3, 4], inits)
    folded = fold_constants(model)
    assert _ops(folded) == ["Mul"]
    net, _, _ = dual_check(model, rng.normal(size=(2, 3, 4)), exact=True)
    x = np.ones((1, 3, 4), dtype=np.float32)
    np.testing.assert_allclose(run_ort(model, x)[0, 0], [0.0, 1.0, 1.0, 3.0])


def test_folding_at_a_static_input_shape_evaluates_at_that_shape():
    nodes = _shape_chain_reshape(17)
    model = make_model(nodes, [2, 3], [6], {"zero": np.array(0, dtype=np.int64),
                                            "minus_one": np.array([-1], dtype=np.int64),
                                            "axes": np.array([0], dtype=np.int64)})
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # a VNN-COMP style batch of one
    folded = fold_constants(model)
    assert _ops(folded) == ["Reshape"]
    net = onnxdual.load(model)
    assert net(torch.zeros(4, 2, 3)).shape == (4, 6)  # the batch-of-one target copies the batch


def test_a_batch_dependent_value_outside_a_reshape_target_is_not_folded():
    """Shape(x)[0] feeding an Expand of a variable depends on the batch size: left alone (and refused)."""
    nodes = [
        helper.make_node("Shape", ["input"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "three"], ["target"], axis=0),
        helper.make_node("Expand", ["input", "target"], ["output"]),
    ]
    model = make_model(nodes, [1], [3], {"zero": np.array(0, dtype=np.int64),
                                         "axes": np.array([0], dtype=np.int64),
                                         "three": np.array([3], dtype=np.int64)})
    assert "Shape" in _ops(fold_constants(model))


def test_random_values_are_never_folded():
    nodes = [helper.make_node("RandomNormal", [], ["noise"], shape=[3], dtype=TensorProto.FLOAT),
             helper.make_node("Add", ["input", "noise"], ["output"])]
    model = make_model(nodes, [3], [3])
    assert _ops(fold_constants(model)) == ["RandomNormal", "Add"]


def test_vit_benchmark_folds_its_class_token_and_matches_onnxruntime(shared):
    """VNN-COMP 2023 vit: after folding every operator has a dual layer (Shape and ConstantOfShape are gone;
    Softmax has its own dual); the folded network computes onnxruntime's outputs at another batch size."""
    from onnxdual.frontend.onnx_import import missing_duals
    from onnxdual.frontend.reader import read_model

    model = read_model(shared("benchmarks", "vnncomp", "vit_2023", "onnx", "pgd_2_3_16.onnx"))
    assert not missing_duals(model)
    net = onnxdual.load(model)
    x = np.random.default_rng(0).uniform(0, 1, size=(3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), run_ort(model, x), rtol=1e-4, atol=1e-5)


def test_a_per_example_constant_of_the_batch_size_broadcasts(dual_check):
    """ConstantOfShape([N, 3]) added to the input: the same row for every example, folded to batch 1."""
    nodes = [
        helper.make_node("Shape", ["input"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["twos"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.0])),
        helper.make_node("Add", ["input", "twos"], ["output"]),
    ]
    model = make_model(nodes, [3], [3])
    folded = fold_constants(model)
    assert _ops(folded) == ["Add"]
    assert list(next(t for t in folded.graph.initializer).dims) == [1, 3]
    dual_check(model, rng.normal(size=(4, 3)), exact=True)
