import numpy as np
import pytest
from onnx import helper

rng = np.random.default_rng(0)


def test_gemm_linear_module(dual_check, onnx_model):
    w, b = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    model = onnx_model([helper.make_node("Gemm", ["input", "W", "B"], ["output"], transB=1)],
                       [3], [4], {"W": w, "B": b})
    dual_check(model, rng.normal(size=(5, 3)), exact=True)


def test_gemm_general_form(dual_check, onnx_model):
    w, b = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(1, 4)).astype(np.float32)
    model = onnx_model([helper.make_node("Gemm", ["input", "W", "B"], ["output"], alpha=0.5, beta=2.0)],
                       [3], [4], {"W": w, "B": b})
    dual_check(model, rng.normal(size=(2, 3)), exact=True)


@pytest.mark.parametrize("variable_first", [True, False])
def test_matmul(dual_check, onnx_model, variable_first):
    if variable_first:
        w = rng.normal(size=(3, 5)).astype(np.float32)
        model = onnx_model([helper.make_node("MatMul", ["input", "W"], ["output"])], [3], [5], {"W": w})
        x = rng.normal(size=(4, 3))
    else:
        w = rng.normal(size=(5, 3)).astype(np.float32)
        model = onnx_model([helper.make_node("MatMul", ["W", "input"], ["output"])], [3, 2], [5, 2], {"W": w})
        x = rng.normal(size=(4, 3, 2))
    dual_check(model, x, exact=True)


@pytest.mark.parametrize("stride,pad,dilation,group", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 1, 2, 1), (2, 1, 1, 2)])
def test_conv2d(dual_check, onnx_model, stride, pad, dilation, group):
    w = rng.normal(size=(4, 4 // group, 3, 3)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    node = helper.make_node("Conv", ["input", "W", "B"], ["output"], strides=[stride, stride],
                            pads=[pad] * 4, dilations=[dilation, dilation], group=group)
    import onnxruntime  # noqa: F401  (shape comes from onnxruntime below)
    from tests.onnx_builders import run_ort
    x = rng.normal(size=(2, 4, 7, 7)).astype(np.float32)
    probe = onnx_model([node], [4, 7, 7], [4, "H", "W"], {"W": w, "B": b})
    out_shape = run_ort(probe, x).shape[1:]
    model = onnx_model([node], [4, 7, 7], list(out_shape), {"W": w, "B": b})
    dual_check(model, x, exact=True)


def test_conv1d(dual_check, onnx_model):
    w = rng.normal(size=(3, 2, 3)).astype(np.float32)
    model = onnx_model([helper.make_node("Conv", ["input", "W"], ["output"], strides=[2], pads=[1, 1])],
                       [2, 9], [3, 5], {"W": w})
    dual_check(model, rng.normal(size=(3, 2, 9)), exact=True)


@pytest.mark.parametrize("pads,stride", [([0, 1, 1, 2], 1), ([1, 0, 0, 1], 2), ([2, 0, 1, 0], 1)])
def test_conv2d_with_asymmetric_pads(dual_check, onnx_model, pads, stride):
    """onnx2torch turns these into Sequential(zero padding, Conv2d); the dual must treat the pair as one."""
    w = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    node = helper.make_node("Conv", ["input", "W", "B"], ["output"], pads=pads, strides=[stride, stride])
    h = (6 + pads[0] + pads[2] - 3) // stride + 1
    w_out = (5 + pads[1] + pads[3] - 3) // stride + 1
    model = onnx_model([node], [2, 6, 5], [3, h, w_out], {"W": w, "B": b})
    dual_check(model, rng.normal(size=(2, 2, 6, 5)), exact=True)


def test_batchnorm(dual_check, onnx_model):
    c = 3
    params = {"s": rng.normal(size=c), "b": rng.normal(size=c), "m": rng.normal(size=c),
              "v": rng.uniform(0.5, 2, size=c)}
    params = {k: v.astype(np.float32) for k, v in params.items()}
    model = onnx_model([helper.make_node("BatchNormalization", ["input", "s", "b", "m", "v"], ["output"],
                                         epsilon=1e-3)], [c, 4, 4], [c, 4, 4], params)
    dual_check(model, rng.normal(size=(2, c, 4, 4)), exact=True)


@pytest.mark.parametrize("kernel", [(2, 2), (4, 2)])
def test_patch_embedding_conv_transpose_is_the_transposed_convolution(dual_check, onnx_model, kernel):
    """stride = kernel (a vision transformer's patches) takes the matrix-product transpose: exact bounds,
    and the same A^T nu as the transposed convolution it replaces."""
    import torch
    import torch.nn.functional as F

    import onnxdual
    from onnxdual.engine.build import build_dual

    w = rng.normal(size=(5, 3, *kernel)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    node = helper.make_node("Conv", ["input", "W", "B"], ["output"], strides=list(kernel),
                            kernel_shape=list(kernel))
    model = onnx_model([node], [3, 8, 6], [5, 8 // kernel[0], 6 // kernel[1]], {"W": w, "B": b})
    dual_check(model, rng.normal(size=(2, 3, 8, 6)), exact=True)
    layer = build_dual(onnxdual.load(model), torch.zeros(1, 3, 8, 6)).steps[0].layer
    nu = torch.tensor(rng.normal(size=(7, 5, 8 // kernel[0], 6 // kernel[1])), dtype=torch.float64)
    expected = F.conv_transpose2d(nu, torch.tensor(w, dtype=torch.float64), None, kernel)
    torch.testing.assert_close(layer.transpose(nu)[0], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variable_first,in_shape,w_shape,out_shape", [
    (True, [3], (3, 5), [5]), (True, [2, 3], (3, 5), [2, 5]),
    (False, [3, 2], (5, 3), [5, 2]), (False, [4, 3, 2], (5, 3), [4, 5, 2])])
def test_matmul_transpose_is_the_generic_vector_jacobian_product(variable_first, in_shape, w_shape, out_shape):
    """MatMul with a constant matrix transposes directly (``nu W^T`` / ``W^T nu``): the same map as the
    generic vector-Jacobian product of :class:`AffineDual`, which it replaces for start-up's sake."""
    import torch

    import onnxdual
    from onnxdual.duals.base import AffineDual
    from onnxdual.duals.linear import MatMulDual
    from onnxdual.engine.network import DualNetwork
    from tests.onnx_builders import make_model

    w = rng.normal(size=w_shape).astype(np.float32)
    inputs = ["input", "W"] if variable_first else ["W", "input"]
    model = onnxdual.load(make_model([helper.make_node("MatMul", inputs, ["output"])], in_shape, out_shape,
                                     {"W": w})).double()
    (step,) = DualNetwork(model, torch.zeros((1, *in_shape), dtype=torch.float64), 0.1).built.steps
    assert isinstance(step.layer, MatMulDual)
    nu = torch.from_numpy(rng.normal(size=(3, *out_shape)))
    (direct,) = step.layer.transpose(nu)
    (generic,) = AffineDual.transpose(step.layer, nu)
    torch.testing.assert_close(direct, generic, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c_in", [1, 3, 5])  # 1 and 3: the fold (few input channels); 5: conv_transpose2d
@pytest.mark.parametrize("stride,pad,dilation", [(1, 0, 1), (2, 1, 1), (2, 0, 2), (3, 2, 1)])
def test_conv_transpose_is_the_adjoint_of_the_convolution(onnx_model, c_in, stride, pad, dilation):
    """A^T nu, however it is computed, is the vector-Jacobian product of A x (odd sizes, where the stride
    leaves input rows that no output reads)."""
    import torch

    import onnxdual
    from onnxdual.engine.build import build_dual

    w = rng.normal(size=(4, c_in, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["input", "W"], ["output"], strides=[stride, stride], pads=[pad] * 4,
                            dilations=[dilation, dilation])
    h, wd = 8, 7
    out = [(n + 2 * pad - dilation * 2 - 1) // stride + 1 for n in (h, wd)]
    layer = build_dual(onnxdual.load(onnx_model([node], [c_in, h, wd], [4, *out], {"W": w})),
                       torch.zeros(1, c_in, h, wd)).steps[0].layer
    x = torch.zeros((6, c_in, h, wd), requires_grad=True)
    nu = torch.tensor(rng.normal(size=(6, 4, *out)), dtype=torch.float32)
    (expected,) = torch.autograd.grad(layer.linear(x), x, nu)
    torch.testing.assert_close(layer.transpose(nu)[0], expected, rtol=1e-5, atol=1e-5)
