import numpy as np
import pytest
from onnx import helper

import onnxdual

rng = np.random.default_rng(2)


@pytest.mark.parametrize("opset", [9, 13, 17])
def test_flatten(dual_check, onnx_model, opset):
    model = onnx_model([helper.make_node("Flatten", ["input"], ["output"], axis=1)], [2, 3, 2], [12], opset=opset)
    dual_check(model, rng.normal(size=(3, 2, 3, 2)), exact=True)


@pytest.mark.parametrize("shape", [[0, -1], [1, -1], [-1, 6], [0, 3, 2]])
def test_reshape(dual_check, onnx_model, shape):
    out = [6] if len(shape) == 2 else [3, 2]
    model = onnx_model([helper.make_node("Reshape", ["input", "S"], ["output"])], [2, 3], out,
                       {"S": np.array(shape, dtype=np.int64)})
    dual_check(model, rng.normal(size=(1 if shape[0] == 1 else 3, 2, 3)), exact=True)


def test_reshape_with_hard_coded_batch_takes_any_batch(onnx_model):
    import torch
    model = onnx_model([helper.make_node("Reshape", ["input", "S"], ["output"])], [2, 3], [6],
                       {"S": np.array([1, 6], dtype=np.int64)})
    net = onnxdual.load(model)
    assert net(torch.zeros(5, 2, 3)).shape == (5, 6)


def test_transpose(dual_check, onnx_model):
    model = onnx_model([helper.make_node("Transpose", ["input"], ["output"], perm=[0, 2, 3, 1])],
                       [2, 3, 4], [3, 4, 2])
    dual_check(model, rng.normal(size=(2, 2, 3, 4)), exact=True)


def test_transpose_of_batch_axis_is_rejected(onnx_model):
    import torch
    model = onnx_model([helper.make_node("Transpose", ["input"], ["output"], perm=[1, 0])], [3], [3])
    with pytest.raises(onnxdual.InvalidInputError, match="batch axis"):
        onnxdual.DualNetwork(onnxdual.load(model), torch.zeros(3, 3), 0.1).lower_bound(torch.zeros(3, 1, 3))


@pytest.mark.parametrize("op", ["Identity", "Dropout"])
def test_identity_like(dual_check, onnx_model, op):
    model = onnx_model([helper.make_node(op, ["input"], ["output"])], [4], [4])
    dual_check(model, rng.normal(size=(2, 4)), exact=True)


@pytest.mark.parametrize("value", [0.0, 1.5])
def test_pad_constant(dual_check, onnx_model, value):
    nodes = [helper.make_node("Pad", ["input", "P", "V"], ["output"], mode="constant")]
    model = onnx_model(nodes, [1, 3, 3], [1, 5, 4],
                       {"P": np.array([0, 0, 1, 0, 0, 0, 1, 1], dtype=np.int64),
                        "V": np.array(value, dtype=np.float32)})
    dual_check(model, rng.normal(size=(2, 1, 3, 3)), exact=True)


def test_constant_feeding_an_add(dual_check, onnx_model):
    const = helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", 1, [3], [1.0, -2.0, 0.5]))
    model = onnx_model([const, helper.make_node("Add", ["input", "c"], ["output"])], [3], [3])
    dual_check(model, rng.normal(size=(2, 3)), exact=True)


def test_cast_to_float32_is_the_identity(dual_check, onnx_model):
    nodes = [helper.make_node("Cast", ["input"], ["h"], to=1), helper.make_node("Relu", ["h"], ["output"])]
    model = onnx_model(nodes, [4], [4], opset=17)
    dual_check(model, np.random.default_rng(2).normal(size=(3, 4)), eps=0.3)


@pytest.mark.parametrize("to", [2, 10, 11])  # uint8, float16, double: neither float32 nor a step
def test_other_casts_on_the_input_path_are_refused(onnx_model, to):  # (integer and BOOL casts: test_steps)
    import torch

    import onnxdual
    from onnxdual.errors import UnsupportedError

    model = onnx_model([helper.make_node("Cast", ["input"], ["h"], to=to),
                        helper.make_node("Cast", ["h"], ["output"], to=1)], [3], [3], opset=17)
    with pytest.raises(UnsupportedError):
        onnxdual.DualNetwork(onnxdual.load(model), torch.zeros(1, 3), 0.1).lower_bound(torch.ones(1, 1, 3))


def test_shape_and_constant_of_shape_fold_to_constants(dual_check, onnx_model):
    """x + ConstantOfShape(Shape(x), 2.5): the shape is static, the frontend folds both, bounds are exact."""
    from onnx import TensorProto

    nodes = [helper.make_node("Shape", ["input"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["c"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.5])),
             helper.make_node("Add", ["input", "c"], ["output"])]
    model = onnx_model(nodes, [3], [3], opset=17)
    # the batch is dynamic in the graph: Shape(x) includes it, so the constant broadcasts per example
    dual_check(model, np.random.default_rng(3).normal(size=(1, 3)), eps=0.2, exact=True)
