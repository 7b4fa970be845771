"""Dual layer of average pooling (AveragePool, GlobalAveragePool): a fixed linear map (Corollary 1)."""

from __future__ import annotations

from torch import Tensor

from onnxdual.duals.base import AffineDual, NodeContext


class AveragePoolDual(AffineDual):
    """Average pooling has no offset: the op itself is its linear part; the adjoint comes from the generic
    vector-Jacobian product."""

    def linear(self, x: Tensor) -> Tensor:
        return self.ctx.call(x)

    def abs_linear(self, x: Tensor) -> Tensor:
        return self.linear(x)  # averaging weights are non-negative


def average_pool_dual(ctx: NodeContext) -> AffineDual:
    return AveragePoolDual(ctx)
