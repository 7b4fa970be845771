"""Dual layer of Resize and Upsample: every mode (nearest, linear, cubic) interpolates with fixed weights
given constant ``roi`` / ``scales`` / ``sizes``, a linear map of the input without offset, so the node itself
is :meth:`linear` and its dual the exact vector-Jacobian product (Corollary 1). Nearest and (bi/tri)linear
weights are non-negative, so ``|A| = A`` for interval bounds; cubic weights are not (no interval bound)."""

from __future__ import annotations

from torch import Tensor

from onnxdual.duals.base import AffineDual, NodeContext


class ResizeDual(AffineDual):
    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        if ctx.variable_positions != (0,):
            raise ctx.unsupported("roi, scales and sizes must be constants")
        mode = ctx.attributes.get("mode", "nearest")
        self.mode = mode.decode() if isinstance(mode, bytes) else mode
        if self.mode not in ("nearest", "linear", "bilinear", "cubic"):
            raise ctx.unsupported(f"mode {self.mode!r} is not an interpolation")
        if len(ctx.output_shape) != len(ctx.input_shapes[0]):
            raise ctx.unsupported("the output must keep the input's rank")

    def forward(self, x: Tensor) -> Tensor:
        return self.ctx.call(x)

    def linear(self, x: Tensor) -> Tensor:
        return self.ctx.call(x)

    def abs_linear(self, r: Tensor) -> Tensor | None:
        return None if self.mode == "cubic" else self.linear(r)


def resize_dual(ctx: NodeContext) -> AffineDual:
    return ResizeDual(ctx)
