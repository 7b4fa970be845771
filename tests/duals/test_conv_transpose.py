"""ConvTranspose (strides, asymmetric pads, output_padding, dilations, groups, output_shape) and Resize /
Upsample (nearest, linear): onnxruntime parity, exact bounds, adjoint and |A| (|W| for ConvTranspose)."""

import numpy as np
import pytest
from onnx import helper

from tests.duals.affine_checks import check_exact

rng = np.random.default_rng(6)
F32 = np.float32



@pytest.mark.parametrize("opset", [1, 11, 17])
@pytest.mark.parametrize("attrs,out", [
    ({}, [3, 5, 6]),
    ({"strides": [2, 2], "pads": [1, 0, 0, 0]}, [3, 8, 9]),  # asymmetric: symmetric plus output_padding
    ({"strides": [2, 2], "pads": [1, 1, 1, 1]}, [3, 7, 7]),
    ({"strides": [2, 1], "output_padding": [1, 0], "dilations": [1, 2]}, [3, 8, 8]),
    ({"strides": [2, 2], "output_shape": [6, 8]}, [3, 6, 8]),  # onnx2torch would ignore output_shape
    ({"strides": [2, 2], "auto_pad": "SAME_LOWER"}, [3, 6, 8]),
    ({"strides": [2, 2], "auto_pad": "SAME_UPPER"}, [3, 6, 8]),  # crops more at the end: a Slice after
    ({"strides": [2, 1], "pads": [0, 1, 2, 0]}, [3, 7, 5]),  # begin < end on one axis, > on the other
])
def test_conv_transpose_2d(onnx_model, opset, attrs, out):
    w = rng.normal(size=(2, 3, 3, 3)).astype(F32)
    b = rng.normal(size=(3,)).astype(F32)
    node = helper.make_node("ConvTranspose", ["input", "W", "B"], ["output"], **attrs)
    model = onnx_model([node], [2, 3, 4], out, {"W": w, "B": b}, opset=opset)
    check_exact(model, rng.normal(size=(2, 2, 3, 4)))


def test_conv_transpose_grouped_1d(onnx_model):
    w = rng.normal(size=(4, 1, 3)).astype(F32)
    node = helper.make_node("ConvTranspose", ["input", "W"], ["output"], group=2, strides=[2])
    model = onnx_model([node], [4, 5], [2, 11], {"W": w})
    check_exact(model, rng.normal(size=(2, 4, 5)))


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("mode,transform", [("nearest", "asymmetric"), ("linear", "half_pixel"),
                                            ("linear", "align_corners")])
def test_resize_scales(onnx_model, opset, mode, transform):
    node = helper.make_node("Resize", ["input", "roi", "scales"], ["output"], mode=mode,
                            coordinate_transformation_mode=transform)
    model = onnx_model([node], [2, 3, 4], [2, 6, 8],
                       {"roi": np.array([], F32), "scales": np.array([1, 1, 2, 2], F32)}, opset=opset)
    check_exact(model, rng.normal(size=(2, 2, 3, 4)))


def test_upsample_opset_9_is_a_resize(onnx_model):
    node = helper.make_node("Upsample", ["input", "scales"], ["output"], mode="nearest")
    model = onnx_model([node], [2, 3, 4], [2, 6, 8], {"scales": np.array([1, 1, 2, 2], F32)}, opset=9)
    check_exact(model, rng.normal(size=(2, 2, 3, 4)))
