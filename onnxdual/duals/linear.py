"""Dual layers of weighted linear operators: Gemm, MatMul, Conv, BatchNormalization.

Each is affine, ``z = W x + b``, so its dual layer is ``nu_in = W^T nu`` with objective term ``b^T nu``
(Corollary 1, eq. 9; batch normalisation with fixed statistics is App. B.5, eq. 48-49).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onnxdual.duals.base import AffineDual, NodeContext


class LinearModuleDual(AffineDual):
    """``nn.Linear`` (what onnx2torch makes of a Gemm with constant weights)."""

    def __init__(self, ctx: NodeContext, weight: Tensor, scale: float = 1.0):
        super().__init__(ctx)
        self.weight, self.scale = weight, scale

    def linear(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight)
        return out if self.scale == 1.0 else out * self.scale

    def transpose(self, nu: Tensor) -> tuple[Tensor]:
        out = nu @ self.weight
        return (out if self.scale == 1.0 else out * self.scale,)


class MatMulDual(AffineDual):
    """``x @ W`` or ``W @ x`` with one constant operand (a Gemm with constant B, or MatMul)."""

    def linear(self, *xs: Tensor | None) -> Tensor:
        return self.ctx.call(*xs) - self._constant_part()

    def _constant_part(self) -> Tensor | float:
        return self._offset if self._offset is not None else 0.0

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        if len(ctx.variable_positions) != 1:
            raise ctx.unsupported("a product of two inputs that both depend on the network input is not linear")
        self._offset = None
        if ctx.op_type == "Gemm" and len(ctx.inputs) > 2 and ctx.inputs[2] is not None:
            # Gemm with a bias: keep the bias out of the linear part.
            beta = float(ctx.attributes.get("beta", 1.0))
            self._offset = ctx.inputs[2] * beta


def gemm_dual(ctx: NodeContext) -> AffineDual:
    if isinstance(ctx.module, nn.Linear):
        return LinearModuleDual(ctx, ctx.module.weight)
    return MatMulDual(ctx)


def matmul_dual(ctx: NodeContext) -> AffineDual:
    return MatMulDual(ctx)


class ConvDual(AffineDual):
    """``nn.Conv1d/2d/3d`` with any stride, padding, dilation and groups.

    ONNX allows asymmetric ``pads`` (TensorFlow exports use them for 'same' convolutions); onnx2torch turns
    such a Conv into ``Sequential(zero padding, ConvNd)``. Zero padding is linear, so the pair is one affine
    operation: ``A x = conv(pad(x))`` and ``A^T nu = crop(conv^T(nu))`` (cropping is the adjoint of zero
    padding)."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        module = ctx.module
        # F.pad order: (last-dim left, last-dim right, next-to-last left, ...)
        self.pads: tuple[int, ...] = ()
        if isinstance(module, nn.Sequential) and len(module) == 2:
            padding, module = module[0], module[1]
            pads = tuple(int(p) for p in getattr(padding, "pads", ()))
            if (getattr(padding, "mode", None) != "constant" or float(getattr(padding, "constant_value", 1.0))
                    or not pads or min(pads) < 0):
                module = padding  # not a zero padding: reported below
            self.pads = pads
        if not isinstance(module, nn.modules.conv._ConvNd) or module.padding_mode != "zeros":
            raise ctx.unsupported("only zero-padded convolutions are supported (onnx2torch turned this Conv "
                                  f"into {type(ctx.module).__name__}, e.g. for a non-zero padding mode)")
        self.conv = module
        self.dims = len(module.kernel_size)

    def _padded_shape(self) -> tuple[int, ...]:
        shape = list(self.ctx.input_shapes[0])
        for i in range(len(self.pads) // 2):
            shape[-1 - i] += self.pads[2 * i] + self.pads[2 * i + 1]
        return tuple(shape)

    def linear(self, x: Tensor) -> Tensor:
        conv = self.conv
        if self.pads:
            x = F.pad(x, self.pads)
        if isinstance(conv.padding, str):
            return conv._conv_forward(x, conv.weight, None)
        fn = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        return fn(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)

    def transpose(self, nu: Tensor) -> tuple[Tensor]:
        conv = self.conv
        if isinstance(conv.padding, str):  # 'same'/'valid' padding: fall back to the generic vjp
            return super().transpose(nu)
        in_shape = self._padded_shape()
        in_spatial = in_shape[1:]
        out_spatial = nu.shape[2:]
        output_padding = tuple(
            in_spatial[d] - ((out_spatial[d] - 1) * conv.stride[d] - 2 * conv.padding[d]
                             + conv.dilation[d] * (conv.kernel_size[d] - 1) + 1)
            for d in range(self.dims))
        fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[self.dims - 1]
        out = fn(nu, conv.weight, None, conv.stride, conv.padding, output_padding, conv.groups, conv.dilation)
        for i in range(len(self.pads) // 2):  # crop what the zero padding added
            dim = out.dim() - 1 - i
            out = out.narrow(dim, self.pads[2 * i], out.shape[dim] - self.pads[2 * i] - self.pads[2 * i + 1])
        return (out,)


def conv_dual(ctx: NodeContext) -> AffineDual:
    return ConvDual(ctx)


class BatchNormDual(AffineDual):
    """Batch normalisation with fixed (inference) statistics: a per-channel scale and shift (App. B.5)."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        bn = ctx.module
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            weight = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
            self._scale_params = (weight, bn.running_var, bn.eps)
        else:  # onnx2torch's generic OnnxBatchNorm takes its statistics as inputs
            _, weight, _, _, var = ctx.inputs
            self._scale_params = (weight, var, ctx.module.epsilon)

    def _scale(self, ndim: int) -> Tensor:
        weight, var, eps = self._scale_params
        scale = weight / torch.sqrt(var + eps)
        return scale.reshape(1, -1, *([1] * (ndim - 2)))

    def forward(self, x: Tensor) -> Tensor:
        was_training = self.ctx.module.training
        self.ctx.module.eval()  # the dual is only defined for fixed statistics
        try:
            return self.ctx.call(x)
        finally:
            self.ctx.module.train(was_training)

    def linear(self, x: Tensor) -> Tensor:
        return x * self._scale(x.dim())

    def transpose(self, nu: Tensor) -> tuple[Tensor]:
        return (nu * self._scale(nu.dim()),)


def batchnorm_dual(ctx: NodeContext) -> AffineDual:
    return BatchNormDual(ctx)
