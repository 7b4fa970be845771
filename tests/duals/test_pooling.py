import numpy as np
import pytest
from onnx import helper

rng = np.random.default_rng(3)


@pytest.mark.parametrize("pads,include", [([0, 0, 0, 0], 0), ([1, 1, 1, 1], 0), ([1, 1, 1, 1], 1)])
def test_average_pool(dual_check, onnx_model, pads, include):
    node = helper.make_node("AveragePool", ["input"], ["output"], kernel_shape=[2, 2], strides=[2, 2], pads=pads,
                            count_include_pad=include)
    out = 2 if pads[0] == 0 else 3
    model = onnx_model([node], [2, 4, 4], [2, out, out])
    dual_check(model, rng.normal(size=(2, 2, 4, 4)), exact=True)


def test_global_average_pool(dual_check, onnx_model):
    model = onnx_model([helper.make_node("GlobalAveragePool", ["input"], ["output"])], [3, 4, 4], [3, 1, 1])
    dual_check(model, rng.normal(size=(2, 3, 4, 4)), exact=True)
