"""``Transpose(C @ Transpose(X))`` (how exporters write ``x W^T`` for a batch of rows, e.g. the VNN-COMP
ml4acopf models) loads as ``X @ C^T``: it matches onnxruntime at several batch sizes and its bounds are
exact (an affine network); a transposed value that feeds another node as well is left as it is."""

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
from onnxdual.errors import UnsupportedNodeError

rng = np.random.default_rng(31)
C = rng.normal(size=(3, 4)).astype(np.float32)


def _nodes(extra_use: bool = False):
    nodes = [helper.make_node("Transpose", ["input"], ["t"], perm=[1, 0]),
             helper.make_node("MatMul", ["C", "t"], ["m"]),
             helper.make_node("Transpose", ["m"], ["output" if not extra_use else "o1"], perm=[1, 0])]
    if extra_use:  # the transposed input also feeds a second product: not the pattern
        nodes += [helper.make_node("MatMul", ["C", "t"], ["m2"]),
                  helper.make_node("Transpose", ["m2"], ["o2"], perm=[1, 0]),
                  helper.make_node("Add", ["o1", "o2"], ["output"])]
    return nodes


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_the_transposed_product_is_one_matmul(dual_check, onnx_model, opset):
    model = onnx_model(_nodes(), [4], [3], {"C": C}, opset=opset)
    for batch in (1, 3):
        dual_check(model, rng.normal(size=(batch, 4)), eps=0.5, exact=True)


def test_a_transposed_value_used_twice_is_left_alone(onnx_model):
    model = onnx_model(_nodes(extra_use=True), [4], [3], {"C": C})
    with pytest.raises(UnsupportedNodeError, match="batch axis"):
        onnxdual.DualNetwork(onnxdual.load(model), torch.zeros(1, 4), 0.1).lower_bound(torch.eye(3)[None])
