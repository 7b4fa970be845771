"""Dual layers of weighted linear operators: Gemm, MatMul, Conv, BatchNormalization.

Each is affine, ``z = W x + b``, so its dual layer is ``nu_in = W^T nu`` with objective term ``b^T nu``
(Corollary 1, eq. 9; batch normalisation with fixed statistics is App. B.5, eq. 48-49).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from onnxdual.duals.base import AffineDual, LocalKernel, NodeContext


class LinearModuleDual(AffineDual):
    """``x @ W^T`` (times ``scale``) for a constant ``(out, in)`` matrix ``W``: a Gemm with a constant B."""

    def __init__(self, ctx: NodeContext, weight: Tensor, scale: float = 1.0):
        super().__init__(ctx)
        self.weight, self.scale = weight, scale

    def linear(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight)
        return out if self.scale == 1.0 else out * self.scale

    def transpose(self, nu: Tensor) -> tuple[Tensor]:
        out = nu @ self.weight
        return (out if self.scale == 1.0 else out * self.scale,)

    def abs_linear(self, r: Tensor) -> Tensor:
        return F.linear(r, self.weight.abs()) * abs(self.scale)


class MatMulDual(AffineDual):
    """``x @ W`` or ``W @ x`` with one constant operand (a Gemm of any other form, or MatMul): the node's
    own forward without its constant part."""

    def linear(self, *xs: Tensor | None) -> Tensor:
        return self.ctx.call(*xs) - self._constant_part()

    def _constant_part(self) -> Tensor | float:
        return self._offset if self._offset is not None else 0.0

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        if len(ctx.variable_positions) != 1:
            raise ctx.unsupported("a product of two inputs that both depend on the network input is not linear")
        self._offset = None
        bias = ctx.constant(2) if ctx.op_type == "Gemm" else None
        if bias is not None:  # Gemm with a bias: keep the bias out of the linear part
            self._offset = bias * float(ctx.attributes.get("beta", 1.0))

    def transpose(self, nu: Tensor) -> tuple[Tensor | None, ...]:
        """MatMul with a constant matrix ``W``: ``nu W^T`` (``x W``) or ``W^T nu`` (``W x``), directly --
        the generic vector-Jacobian product is the same map but its shape check imports sympy (~0.6 s CPU
        at start-up); other forms (broadcast batches of ``W``, Gemm) take the generic one."""
        if self.ctx.op_type == "MatMul":
            (position,) = self.ctx.variable_positions
            weight = self.ctx.constant(1 - position)
            shape = self.ctx.input_shapes[position]
            if weight is not None and weight.dim() == 2 and shape is not None and len(shape) >= position + 1:
                w = weight.to(nu.dtype).T
                return (torch.matmul(nu, w) if position == 0 else torch.matmul(w, nu),)
        return super().transpose(nu)

    def abs_linear(self, r: Tensor) -> Tensor | None:
        """MatMul with a constant operand: the product with ``|W|`` (other Gemm forms: unknown)."""
        if self.ctx.op_type != "MatMul":
            return None
        (position,) = self.ctx.variable_positions
        weight = self.ctx.constant(1 - position).abs().to(r.dtype)
        return torch.matmul(r, weight) if position == 0 else torch.matmul(weight, r)


def gemm_dual(ctx: NodeContext) -> AffineDual:
    """``alpha * A' B' + beta * C``: with variable A (not transposed) and constant B a matrix product with
    ``W = B'^T`` (``B`` when ``transB``); every other form through the node's forward."""
    weight = ctx.constant(1)
    if (ctx.variable_positions == (0,) and weight is not None and weight.dim() == 2
            and not int(ctx.attributes.get("transA", 0))):
        w = weight if int(ctx.attributes.get("transB", 0)) else weight.T
        return LinearModuleDual(ctx, w, float(ctx.attributes.get("alpha", 1.0)))
    return MatMulDual(ctx)


def matmul_dual(ctx: NodeContext) -> AffineDual:
    return MatMulDual(ctx)


#: a 2-d convolution from at most this many input channels is transposed by :meth:`ConvDual._fold` on the CPU
#: (measured faster than ``conv_transpose2d`` for 1-4 channels: 2.4-2.7x for one, 1.1-1.6x for 2-4)
FOLD_CHANNELS = 4


class ConvDual(AffineDual):
    """ONNX ``Conv`` (1-d to 3-d) with a constant weight and any strides, pads, dilations and group.

    ONNX allows asymmetric ``pads`` (TensorFlow exports use them for 'same' convolutions). Zero padding is
    linear, so a padding and the convolution are one affine operation: ``A x = conv(pad(x))`` and
    ``A^T nu = crop(conv^T(nu))`` (cropping is the adjoint of zero padding). Symmetric pads are the
    convolution's own padding."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        if ctx.variable_positions != (0,) or ctx.constant(1) is None:
            raise ctx.unsupported("only convolutions of the data input with a constant weight are linear")
        self.weight = ctx.constant(1)
        self.dims = self.weight.dim() - 2
        if not 1 <= self.dims <= 3:
            raise ctx.unsupported(f"convolutions with {self.dims} spatial dimensions are not supported")
        attrs = ctx.attributes
        auto_pad = attrs.get("auto_pad", "NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        pads = [int(p) for p in attrs.get("pads", [0] * 2 * self.dims)]
        if auto_pad == "VALID":
            pads = [0] * 2 * self.dims
        elif auto_pad != "NOTSET":
            raise ctx.unsupported(f"auto_pad {auto_pad} without known input shapes; give explicit pads")
        if min(pads) < 0:
            raise ctx.unsupported("only zero-padded convolutions are supported (negative pads crop)")
        self.stride = tuple(int(v) for v in attrs.get("strides", [1] * self.dims))
        self.dilation = tuple(int(v) for v in attrs.get("dilations", [1] * self.dims))
        self.groups = int(attrs.get("group", 1))
        begins, ends = pads[:self.dims], pads[self.dims:]
        # symmetric pads: the convolution pads; otherwise an explicit zero padding first, in F.pad order
        # (last dimension first)
        self.padding = tuple(begins) if begins == ends else (0,) * self.dims
        self.pads: tuple[int, ...] = () if begins == ends else tuple(
            p for d in reversed(range(self.dims)) for p in (begins[d], ends[d]))

    def local_kernel(self) -> LocalKernel | None:
        if self.dims != 2:
            return None
        begins = self.padding if not self.pads else (self.pads[2], self.pads[0])  # F.pad order: last dim first
        return LocalKernel(self.weight, self.stride, tuple(begins), self.dilation, self.groups)

    def _padded_shape(self) -> tuple[int, ...]:
        shape = list(self.ctx.input_shapes[0])
        for i in range(len(self.pads) // 2):
            shape[-1 - i] += self.pads[2 * i] + self.pads[2 * i + 1]
        return tuple(shape)

    def linear(self, x: Tensor) -> Tensor:
        if self.pads:
            x = F.pad(x, self.pads)
        fn = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        return fn(x, self.weight, None, self.stride, self.padding, self.dilation, self.groups)

    def transpose(self, nu: Tensor) -> tuple[Tensor]:
        in_spatial = self._padded_shape()[1:]
        out_spatial = nu.shape[2:]
        if self._patchify(in_spatial, out_spatial):
            return (self._unpatchify(nu),)
        if self._folds(nu):
            out = self._fold(nu, in_spatial)
        else:
            kernel = self.weight.shape[2:]
            output_padding = tuple(
                in_spatial[d] - ((out_spatial[d] - 1) * self.stride[d] - 2 * self.padding[d]
                                 + self.dilation[d] * (kernel[d] - 1) + 1)
                for d in range(self.dims))
            fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[self.dims - 1]
            out = fn(nu, self.weight, None, self.stride, self.padding, output_padding, self.groups,
                     self.dilation)
        for i in range(len(self.pads) // 2):  # crop what the zero padding added
            dim = out.dim() - 1 - i
            out = out.narrow(dim, self.pads[2 * i], out.shape[dim] - self.pads[2 * i] - self.pads[2 * i + 1])
        return (out,)

    def _folds(self, nu: Tensor) -> bool:
        """Whether :meth:`_fold` transposes ``nu``: a 2-d convolution without groups from few input
        channels, on the CPU (elsewhere the transposed convolution is the faster kernel)."""
        return (self.dims == 2 and self.groups == 1 and self.weight.shape[1] <= FOLD_CHANNELS
                and nu.device.type == "cpu")

    def _fold(self, nu: Tensor, in_spatial) -> Tensor:
        """The transpose as one matrix product (every output unit's kernel-sized column of the input) and a
        fold that adds the columns into the image: the adjoint of ``unfold`` followed by ``W x``. On the CPU
        a transposed convolution onto few channels (an image's first layer) is several times slower."""
        n, c_out = nu.shape[:2]
        # a batched product with the kernel broadcast (stride 0): as ``(kernel, c_out) @ (n, c_out, m)``
        # torch would transpose ``nu`` into one tall matrix (a copy each way, forward and backward)
        weight = self.weight.reshape(c_out, -1).to(nu.dtype).t()
        columns = torch.bmm(weight.expand(n, *weight.shape), nu.reshape(n, c_out, -1))
        return F.fold(columns, tuple(in_spatial), tuple(self.weight.shape[2:]), self.dilation, self.padding,
                      self.stride)

    def _patchify(self, in_spatial, out_spatial) -> bool:
        """A 2-d convolution over non-overlapping windows that tile its input exactly (a vision
        transformer's patch embedding: stride = kernel, no padding, dilation or groups)."""
        kernel = tuple(self.weight.shape[2:])
        return (self.dims == 2 and not self.pads and self.groups == 1 and self.stride == kernel
                and all(p == 0 for p in self.padding) and all(d == 1 for d in self.dilation)
                and tuple(in_spatial) == tuple(o * k for o, k in zip(out_spatial, kernel)))

    def _unpatchify(self, nu: Tensor) -> Tensor:
        """The transpose of a patch embedding as one matrix product ``nu^T W`` per window, folded back
        into the image (several times faster than a transposed convolution on the CPU)."""
        n, c_out, h, w = nu.shape
        c_in, kh, kw = self.weight.shape[1:]
        windows = nu.flatten(2).transpose(1, 2) @ self.weight.reshape(c_out, -1).to(nu.dtype)
        image = windows.reshape(n, h, w, c_in, kh, kw).permute(0, 3, 1, 4, 2, 5)
        return image.reshape(n, c_in, h * kh, w * kw)

    def abs_linear(self, r: Tensor) -> Tensor:
        if self.pads:
            r = F.pad(r, self.pads)
        fn = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        return fn(r, self.weight.abs(), None, self.stride, self.padding, self.dilation, self.groups)


def conv_dual(ctx: NodeContext) -> AffineDual:
    return ConvDual(ctx)


class BatchNormDual(AffineDual):
    """Batch normalisation with fixed (inference) statistics: a per-channel scale and shift (App. B.5).
    The scale ``gamma / sqrt(var + epsilon)`` comes from the node's constant inputs 1 and 4."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        weight, var = ctx.constant(1), ctx.constant(4)
        if ctx.variable_positions != (0,) or weight is None or var is None:
            raise ctx.unsupported("only batch normalisation with constant scale and statistics is linear")
        self._scale_params = (weight, var, float(ctx.attributes.get("epsilon", 1e-5)))

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

    def abs_linear(self, r: Tensor) -> Tensor:
        return r * self._scale(r.dim()).abs()

    def local_kernel(self) -> LocalKernel | None:
        """A per-channel scale of an image is a depthwise 1x1 convolution."""
        if len(self.ctx.input_shapes[0]) != 3:
            return None
        scale = self._scale(4).reshape(-1, 1, 1, 1)
        return LocalKernel(scale, groups=scale.shape[0])


def batchnorm_dual(ctx: NodeContext) -> AffineDual:
    return BatchNormDual(ctx)
