"""Models whose input has no batch dimension: onnxdual adds one in front (onnxdual/frontend/rewrites.py,
add_batch_axis), so every axis counted from the front on the variable path moves by one. Each model: the
batched conversion of the rewritten model, row by row, equals onnxruntime on the original unbatched one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxdual
from onnxdual.frontend.rewrites import add_batch_axis
from tests.onnx_builders import run_ort

pytestmark = pytest.mark.usefixtures("one_thread")


def _unbatched(nodes, in_shape, out_shape, inits=(), opset=17):
    graph = helper.make_graph(
        nodes, "unbatched", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(out_shape))],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _i64(*v):
    return np.array(v, dtype=np.int64)


CASES = {
    "gather": ([helper.make_node("Gather", ["input", "idx"], ["output"], axis=0)], [4], [2],
               {"idx": _i64(3, 1)}),
    "gather_2d_axis1": ([helper.make_node("Gather", ["input", "idx"], ["output"], axis=1)], [2, 3], [2, 2],
                        {"idx": _i64(2, 0)}),
    "slice_with_axes": ([helper.make_node("Slice", ["input", "s", "e", "a"], ["output"])], [5], [2],
                        {"s": _i64(1), "e": _i64(3), "a": _i64(0)}),
    "slice_without_axes": ([helper.make_node("Slice", ["input", "s", "e"], ["output"])], [3, 4], [2, 4],
                           {"s": _i64(1), "e": _i64(3)}),
    "slice_steps": ([helper.make_node("Slice", ["input", "s", "e", "", "st"], ["output"])], [6], [3],
                    {"s": _i64(0), "e": _i64(6), "st": _i64(2)}),
    "concat_of_variables": ([helper.make_node("Slice", ["input", "s", "e"], ["h"]),
                             helper.make_node("Concat", ["h", "input"], ["output"], axis=0)], [3], [5],
                            {"s": _i64(1), "e": _i64(3)}),
    "concat_with_a_constant": ([helper.make_node("Concat", ["input", "c"], ["output"], axis=0)], [2], [4],
                               {"c": np.array([10.0, -3.0], np.float32)}),
    "concat_with_constants_axis_1": ([helper.make_node("Concat", ["c", "input", "c"], ["output"], axis=-1)],
                                     [2, 2], [2, 4], {"c": np.array([[1.0], [2.0]], np.float32)}),
    "unsqueeze_reduce": ([helper.make_node("Unsqueeze", ["input", "u"], ["h"]),
                          helper.make_node("ReduceSum", ["h", "r"], ["output"], keepdims=0)], [3], [3],
                         {"u": _i64(0), "r": _i64(0)}),
    "reduce_max_attribute": ([helper.make_node("ReduceMax", ["input"], ["output"], axes=[1], keepdims=0)],
                             [2, 3], [2], {}),
    "reduce_sum_every_axis": ([helper.make_node("ReduceSum", ["input"], ["output"], keepdims=0)],
                              [2, 3], [], {}),
    "reduce_mean_every_axis_13": ([helper.make_node("ReduceMean", ["input"], ["output"])],
                                  [2, 3], [1, 1], {}),
    "split_second_part": ([helper.make_node("Split", ["input", "sizes"], ["a", "output"], axis=0)], [5], [3],
                          {"sizes": _i64(2, 3)}),
    "softmax_axis_0": ([helper.make_node("Softmax", ["input"], ["output"], axis=0)], [3, 2], [3, 2], {}),
}
OPSETS = {"reduce_max_attribute": 13, "reduce_mean_every_axis_13": 13}


@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_conversion_equals_onnxruntime_per_example(case):
    nodes, in_shape, out_shape, inits = CASES[case]
    opset = OPSETS.get(case, 17)
    model = _unbatched(nodes, in_shape, out_shape, inits, opset)
    net = onnxdual.load(add_batch_axis(model))
    x = np.random.default_rng(0).normal(size=(3, *in_shape)).astype(np.float32)
    with torch.no_grad():
        got = net(torch.tensor(x)).numpy()
    for b in range(3):
        np.testing.assert_allclose(got[b], run_ort(model, x[b]), rtol=1e-6, atol=1e-6)


def test_a_concat_with_constants_is_bounded_exactly():
    """Concat(x, constants) without a batch axis becomes Pad(x) + C: the dual bound of every output is
    exact (the map is affine), the constants' entries fixed."""
    nodes, in_shape, out_shape, inits = CASES["concat_with_constants_axis_1"]
    net = onnxdual.load(add_batch_axis(_unbatched(nodes, in_shape, out_shape, inits)))
    x = torch.tensor([[[0.5, -1.0], [2.0, 0.0]]])
    eye = torch.eye(8).unsqueeze(0)
    low = onnxdual.DualNetwork(net, x, 0.25).lower_bound(eye).reshape(2, 4)
    expected = torch.tensor([[1.0, 0.25, -1.25, 1.0], [2.0, 1.75, -0.25, 2.0]])
    torch.testing.assert_close(low, expected)
