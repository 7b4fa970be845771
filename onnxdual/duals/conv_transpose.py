"""Dual layer of ConvTranspose (1-d to 3-d) with a constant weight: ``z = W^T * x + b`` is affine, so its
dual is the convolution ``nu_in = W * nu`` (Corollary 1; here the exact vector-Jacobian product of
:meth:`linear`) with objective term ``b . nu``; ``|A|`` is the transposed convolution with ``|W|``.

Built from the ONNX node: ``strides``, ``dilations``, ``group``, ``pads`` (asymmetric allowed),
``output_padding`` (``output_shape`` and ``auto_pad`` the frontend has written as pads).
The full transposed convolution is computed without padding, then ``output_padding`` zeros are appended and
``pads`` cropped, exactly the ONNX output size formula."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from onnxdual.duals.base import AffineDual, NodeContext

_FUNCTIONS = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)


class ConvTransposeDual(AffineDual):
    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        weight = ctx.constant(1)
        if ctx.variable_positions != (0,) or weight is None:
            raise ctx.unsupported("only transposed convolutions of the data input with a constant weight "
                                  "are linear")
        self.weight = weight
        self.dims = weight.dim() - 2
        if not 1 <= self.dims <= 3:
            raise ctx.unsupported(f"{self.dims} spatial dimensions are not supported")
        attrs, d = ctx.attributes, self.dims
        self.stride = tuple(int(v) for v in attrs.get("strides", [1] * d))
        self.dilation = tuple(int(v) for v in attrs.get("dilations", [1] * d))
        self.groups = int(attrs.get("group", 1))
        out_pad = [int(v) for v in attrs.get("output_padding", [0] * d)]
        auto_pad = attrs.get("auto_pad", "NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if "output_shape" in attrs or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            # the frontend writes these as pads (frontend.rewrites.conv_transpose_pads); left here, the
            # converted module did not apply them
            raise ctx.unsupported("output_shape / auto_pad without known input shapes; give explicit pads")
        if auto_pad == "VALID":
            begins = ends = [0] * d
        else:
            pads = [int(p) for p in attrs.get("pads", [0] * 2 * d)]
            begins, ends = pads[:d], pads[d:]
        if min(begins + ends) < 0:
            raise ctx.unsupported("negative pads are not supported")
        self.out_pad, self.begins, self.ends = out_pad, begins, ends

    def _apply(self, x: Tensor, weight: Tensor) -> Tensor:
        out = _FUNCTIONS[self.dims - 1](x, weight, None, self.stride, 0, 0, self.groups, self.dilation)
        if any(self.out_pad):
            out = F.pad(out, [p for i in reversed(range(self.dims)) for p in (0, self.out_pad[i])])
        for i in range(self.dims):
            dim = 2 + i
            out = out.narrow(dim, self.begins[i], out.shape[dim] - self.begins[i] - self.ends[i])
        return out

    def linear(self, x: Tensor) -> Tensor:
        return self._apply(x, self.weight)

    def abs_linear(self, r: Tensor) -> Tensor:
        return self._apply(r, self.weight.abs())


def conv_transpose_dual(ctx: NodeContext) -> AffineDual:
    return ConvTransposeDual(ctx)
