"""Gather and GatherElements with constant indices: onnxruntime parity, exact bounds, adjoint and |A|."""

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
from onnxdual.errors import UnsupportedNodeError
from tests.duals.affine_checks import check_affine_layers, check_exact
from tests.onnx_builders import run_ort

rng = np.random.default_rng(4)
I64 = np.int64



@pytest.mark.parametrize("opset", [1, 11, 13])
@pytest.mark.parametrize("axis,indices,out", [
    (1, [2, -1, 0, 2], [4, 5]),        # repeated and negative indices
    (-1, [[1, 0], [4, 4]], [3, 2, 2]),  # a matrix of indices
    (2, 3, [3]),                        # a scalar index drops the axis
])
def test_gather(onnx_model, opset, axis, indices, out):
    if opset < 11 and np.min(indices) < 0:
        pytest.skip("negative indices are defined from Gather-11 on")
    model = onnx_model([helper.make_node("Gather", ["input", "i"], ["output"], axis=axis)], [3, 5], out,
                       {"i": np.array(indices, I64)}, opset=opset)
    check_exact(model, rng.normal(size=(2, 3, 5)))


def test_gather_on_the_batch_axis_is_refused(onnx_model):
    model = onnx_model([helper.make_node("Gather", ["input", "i"], ["output"], axis=0)], [3], [3],
                       {"i": np.array([0], I64)})
    with pytest.raises(UnsupportedNodeError, match="batch axis"):
        onnxdual.DualNetwork(onnxdual.load(model), torch.zeros(1, 3), 0.1).lower_bound(torch.zeros(1, 1, 3))


@pytest.mark.parametrize("opset", [11, 13])
def test_gather_elements(onnx_model, opset):
    """(The ONNX output has the indices' shape, batch 1 included: the model is one of batch 1.)"""
    idx = np.array([[[0, -1, 1], [2, 0, -3]]], I64)  # negative ones: made non-negative by the frontend
    node = helper.make_node("GatherElements", ["input", "i"], ["output"], axis=2)
    model = onnx_model([node], [2, 3], [2, 3], {"i": idx}, opset=opset)
    net = onnxdual.load(model)
    x = torch.tensor(rng.normal(size=(1, 2, 3)), dtype=torch.float32)
    np.testing.assert_allclose(net(x).numpy(), run_ort(model, x.numpy()), rtol=1e-6)
    assert check_affine_layers(net, x) == 1
