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
