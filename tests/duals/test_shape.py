"""Concat, Slice, Squeeze/Unsqueeze, Expand, Tile, DepthToSpace: one-node ONNX models against onnxruntime
(several opsets where the operator changed), exact bounds, and per-layer adjoint / |A| checks."""

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
from onnxdual.errors import UnsupportedNodeError
from tests.duals.affine_checks import check_affine_layers, check_exact
from tests.onnx_builders import run_ort

rng = np.random.default_rng(3)
I64 = np.int64



@pytest.mark.parametrize("opset", [11, 13, 17])
def test_concat_of_a_variable_with_itself_and_a_branch(dual_check, onnx_model, opset):
    nodes = [helper.make_node("Relu", ["input"], ["r"]),
             helper.make_node("Concat", ["input", "r", "input"], ["output"], axis=-1)]
    model = onnx_model(nodes, [2, 3], [2, 9], opset=opset)
    dual_check(model, rng.normal(size=(2, 2, 3)))  # Relu: sound, not exact
    lin = onnx_model([helper.make_node("Concat", ["input", "input"], ["output"], axis=1)], [2, 3], [4, 3],
                     opset=opset)
    check_exact(lin, rng.normal(size=(2, 2, 3)))


def test_concat_with_a_constant_operand_is_an_offset(onnx_model):
    """(The converted module concatenates a constant of batch 1: it runs at batch 1 only.)"""
    model = onnx_model([helper.make_node("Concat", ["input", "c"], ["output"], axis=1)], [3], [5],
                       {"c": np.array([[1.5, -2.0]], dtype=np.float32)})
    net = onnxdual.load(model)
    x = torch.tensor(rng.normal(size=(1, 3)), dtype=torch.float32)
    np.testing.assert_allclose(net(x).numpy(), run_ort(model, x.numpy()), rtol=1e-6)
    assert check_affine_layers(net, x) == 1


def test_concat_on_the_batch_axis_is_refused(onnx_model):
    model = onnx_model([helper.make_node("Concat", ["input", "input"], ["output"], axis=0)], [3], [3])
    with pytest.raises(UnsupportedNodeError, match="batch axis"):
        onnxdual.DualNetwork(onnxdual.load(model), torch.zeros(1, 3), 0.1).lower_bound(torch.zeros(1, 1, 3))


SLICES = [  # starts, ends, axes, steps, per-example output shape for a (N, 4, 6) input
    ([1], [3], [1], [1], [2, 6]),
    ([-1], [-7], [2], [-2], [4, 3]),  # negative start, clamped negative end, negative step
    ([0, 5], [4, 1], [-2, -1], [2, -1], [2, 4]),
    ([2], [2**62], [2], None, [4, 4]),  # end past the axis is clamped
    ([0, 1], [2**63 - 1, 3], [0, 1], None, [2, 6]),  # the whole batch axis
]


@pytest.mark.parametrize("opset", [10, 13, 17])
@pytest.mark.parametrize("starts,ends,axes,steps,out", SLICES)
def test_slice(onnx_model, opset, starts, ends, axes, steps, out):
    inits = {"s": np.array(starts, I64), "e": np.array(ends, I64), "a": np.array(axes, I64)}
    names = ["input", "s", "e", "a"]
    if steps is not None:
        inits["t"] = np.array(steps, I64)
        names.append("t")
    model = onnx_model([helper.make_node("Slice", names, ["output"])], [4, 6], out, inits, opset=opset)
    check_exact(model, rng.normal(size=(2, 4, 6)))


def test_slice_opset_1_attributes(onnx_model):
    node = helper.make_node("Slice", ["input"], ["output"], starts=[1], ends=[3], axes=[2])
    check_exact(onnx_model([node], [3, 4], [3, 2], opset=9), rng.normal(size=(2, 3, 4)))


def test_slice_of_the_batch_is_refused(onnx_model):
    model = onnx_model([helper.make_node("Slice", ["input", "s", "e", "a"], ["output"])], [3], [3],
                       {"s": np.array([0], I64), "e": np.array([1], I64), "a": np.array([0], I64)})
    with pytest.raises(UnsupportedNodeError, match="batch axis"):
        onnxdual.DualNetwork(onnxdual.load(model), torch.zeros(1, 3), 0.1).lower_bound(torch.zeros(1, 1, 3))


@pytest.mark.parametrize("opset", [11, 13, 21])
def test_squeeze_unsqueeze(onnx_model, opset):
    if opset >= 13:
        nodes = [helper.make_node("Unsqueeze", ["input", "ax"], ["u"]),
                 helper.make_node("Squeeze", ["u", "ax2"], ["output"])]
        inits = {"ax": np.array([1, -1], I64), "ax2": np.array([1], I64)}
    else:
        nodes = [helper.make_node("Unsqueeze", ["input"], ["u"], axes=[1, -1]),
                 helper.make_node("Squeeze", ["u"], ["output"], axes=[1])]
        inits = {}
    model = onnx_model(nodes, [2, 3], [2, 3, 1], inits, opset=opset)
    check_exact(model, rng.normal(size=(2, 2, 3)))


def test_squeeze_without_axes_is_refused(onnx_model):
    model = onnx_model([helper.make_node("Squeeze", ["input"], ["output"])], [1, 3], [3])
    with pytest.raises(UnsupportedNodeError, match="axes"):
        dual = onnxdual.DualNetwork(onnxdual.load(model), torch.zeros(2, 1, 3), 0.1)
        dual.lower_bound(torch.zeros(2, 1, 3))


@pytest.mark.parametrize("opset", [8, 13])
def test_expand(onnx_model, opset):
    model = onnx_model([helper.make_node("Expand", ["input", "shape"], ["output"])], [3, 1], [3, 4],
                       {"shape": np.array([1, 3, 4], I64)}, opset=opset)
    check_exact(model, rng.normal(size=(2, 3, 1)))


@pytest.mark.parametrize("opset", [6, 13])
def test_tile(onnx_model, opset):
    model = onnx_model([helper.make_node("Tile", ["input", "r"], ["output"])], [2, 3], [4, 9],
                       {"r": np.array([1, 2, 3], I64)}, opset=opset)
    check_exact(model, rng.normal(size=(2, 2, 3)))


@pytest.mark.parametrize("mode", ["CRD", "DCR"])
@pytest.mark.parametrize("opset", [11, 13])
def test_depth_to_space(onnx_model, opset, mode):
    """(onnx2torch 1.5 converts the CRD mode only: DCR is lowered to Reshape/Transpose/Reshape.)"""
    model = onnx_model([helper.make_node("DepthToSpace", ["input"], ["output"], blocksize=2, mode=mode)],
                       [8, 2, 3], [2, 4, 6], opset=opset)
    check_exact(model, rng.normal(size=(2, 8, 2, 3)))


@pytest.mark.parametrize("opset,how", [(11, "attribute"), (13, "input"), (13, "equal"), (18, "num_outputs"),
                                       (9, "attribute")])
def test_split_is_written_as_slices(onnx_model, opset, how):
    """Split (sizes as attribute, input, equal parts, or Split-18's ceil-sized num_outputs) feeding a
    residual sum of its outputs; the frontend writes one Slice per output."""
    inits, kwargs, inputs = {}, {}, ["input"]
    if how == "attribute":
        kwargs["split"] = [2, 3, 2]
    elif how == "input":
        inits["sizes"] = np.array([2, 3, 2], I64)
        inputs.append("sizes")
    elif how == "num_outputs":
        kwargs["num_outputs"] = 3
    length = 6 if how == "equal" else 7
    nodes = [helper.make_node("Split", inputs, ["a", "b", "c"], axis=-1, **kwargs),
             helper.make_node("Concat", ["c", "a", "b"], ["output"], axis=2)]
    model = onnx_model(nodes, [2, length], [2, length], inits, opset=opset)
    check_exact(model, rng.normal(size=(2, 2, length)))


@pytest.mark.parametrize("opset", [1, 13])
def test_space_to_depth_is_lowered(onnx_model, opset):
    model = onnx_model([helper.make_node("SpaceToDepth", ["input"], ["output"], blocksize=2)], [2, 4, 6],
                       [8, 2, 3], opset=opset)
    check_exact(model, rng.normal(size=(2, 2, 4, 6)))
