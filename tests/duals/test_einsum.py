"""Einsum with one variable operand: onnxruntime parity, exact bounds, adjoint and |A|."""

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
from onnxdual.errors import UnsupportedNodeError
from tests.duals.affine_checks import check_exact

rng = np.random.default_rng(7)


@pytest.mark.parametrize("equation,in_shape,const_shape,out,variable_first", [
    ("bij,jk->bik", [2, 3], [3, 4], [2, 4], True),
    ("kj,bj->bk", [3], [4, 3], [4], False),
    ("bij,ij->bi", [2, 3], [2, 3], [2], True),
    ("b i j , j -> b i", [2, 3], [3], [2], True),
])
def test_einsum(onnx_model, equation, in_shape, const_shape, out, variable_first):
    inputs = ["input", "C"] if variable_first else ["C", "input"]
    model = onnx_model([helper.make_node("Einsum", inputs, ["output"], equation=equation)], in_shape, out,
                       {"C": rng.normal(size=const_shape).astype(np.float32)}, opset=12)
    x = rng.normal(size=(2, *in_shape))
    check_exact(model, x)


def test_einsum_mixing_the_batch_is_refused(onnx_model):
    node = helper.make_node("Einsum", ["input", "C"], ["output"], equation="bi,bi->i")
    model = onnx_model([node], [3], [3], {"C": np.ones((1, 3), np.float32)}, opset=12)
    with pytest.raises(UnsupportedNodeError, match="batch axis"):
        onnxdual.DualNetwork(onnxdual.load(model), torch.zeros(1, 3), 0.1).lower_bound(torch.zeros(1, 1, 3))
