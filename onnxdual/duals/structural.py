"""Dual layers of operators that only move values around: Flatten, Reshape, Transpose, Identity,
Dropout (inference), Pad (constant) and Constant. They are linear maps without weights, so their dual is
the adjoint map (Corollary 1); Pad's constant border value goes into the objective as an offset."""

from __future__ import annotations

import torch
from torch import Tensor

from onnxdual.duals.base import AffineDual, ConstantDual, DualLayer, NodeContext
from onnxdual.duals.steps import cast_step_dual


class ReshapeDual(AffineDual):
    """Flatten/Reshape that keep the batch axis first: reshape to the node's per-example shape."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        if len(ctx.variable_positions) != 1 or ctx.variable_positions[0] != 0:
            raise ctx.unsupported("the reshaped tensor must be the only input that depends on the network input")
        self.in_shape = tuple(ctx.input_shapes[0])
        self.out_shape = tuple(ctx.output_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def linear(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.out_shape)

    def transpose(self, nu: Tensor) -> tuple[Tensor]:
        return (nu.reshape(nu.shape[0], *self.in_shape),)

    def abs_linear(self, *radii: Tensor) -> Tensor:
        return self.linear(*radii)  # a map with entries 0 and 1: |A| = A


def reshape_dual(ctx: NodeContext) -> AffineDual:
    return ReshapeDual(ctx)


class TransposeDual(AffineDual):
    """Transpose of the per-example axes (the batch axis must stay first)."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        rank = len(ctx.input_shapes[0]) + 1
        perm = ctx.attributes.get("perm")
        perm = list(perm) if perm is not None else list(reversed(range(rank)))
        if perm[0] != 0:
            raise ctx.unsupported(f"Transpose with perm={perm} moves the batch axis; only per-example "
                                  "transposes (perm[0] == 0) are linear maps of one example")
        self.perm = perm
        self.inverse = [perm.index(i) for i in range(rank)]

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def linear(self, x: Tensor) -> Tensor:
        return x.permute(*self.perm)

    def transpose(self, nu: Tensor) -> tuple[Tensor]:
        return (nu.permute(*self.inverse),)

    def abs_linear(self, *radii: Tensor) -> Tensor:
        return self.linear(*radii)  # a map with entries 0 and 1: |A| = A


def transpose_dual(ctx: NodeContext) -> AffineDual:
    return TransposeDual(ctx)


class IdentityDual(AffineDual):
    """Identity, and Dropout at inference time."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def linear(self, x: Tensor) -> Tensor:
        return x

    def transpose(self, nu: Tensor) -> tuple[Tensor]:
        return (nu,)

    def abs_linear(self, *radii: Tensor) -> Tensor:
        return self.linear(*radii)  # a map with entries 0 and 1: |A| = A


def identity_dual(ctx: NodeContext) -> AffineDual:
    if ctx.variable_positions[:1] != (0,):
        raise ctx.unsupported("only the data input may depend on the network input")
    return IdentityDual(ctx)


class PadDual(AffineDual):
    """Constant padding: ``pad(x, value)`` = ``pad(x, 0)`` + (value on the border)."""

    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        mode = ctx.attributes.get("mode", "constant")
        if isinstance(mode, bytes):
            mode = mode.decode()
        if mode != "constant":
            raise ctx.unsupported(f"Pad mode {mode!r} is not linear in a way this dual supports; use 'constant'")
        self._border: Tensor | None = None

    def linear(self, x: Tensor) -> Tensor:
        # the padded border of pad(x) - pad(0) is exactly 0 and the interior exactly x
        return self.ctx.call(x) - self._border_value(x)

    def abs_linear(self, *radii: Tensor) -> Tensor:
        return self.linear(*radii)  # a map with entries 0 and 1: |A| = A

    def _border_value(self, x: Tensor) -> Tensor:
        if self._border is None or self._border.dtype != x.dtype or self._border.device != x.device:
            self._border = self.ctx.call(torch.zeros((1, *x.shape[1:]), dtype=x.dtype, device=x.device))
        return self._border


def pad_dual(ctx: NodeContext) -> AffineDual:
    return PadDual(ctx)


def constant_dual(ctx: NodeContext) -> ConstantDual:
    return ConstantDual(ctx)


def cast_dual(ctx: NodeContext) -> DualLayer:
    """``Cast`` of the (float32) network's values to float32 is the identity (also back from an integer
    cast: integers are float32 values); to an integer type or BOOL it is a step
    (:func:`onnxdual.duals.steps.cast_step_dual`); other types are refused. Casts of constants are folded
    before bounding."""
    to = int(ctx.attributes.get("to", 0))
    if to != 1:  # TensorProto.FLOAT
        return cast_step_dual(ctx, to)
    return identity_dual(ctx)


def folded_only(ctx: NodeContext) -> AffineDual:
    """``Shape``, ``ConstantOfShape``: their values never depend on the input's values (shapes are static);
    the frontend folds them to constants before bounding, so a node that still reaches a dual layer is on
    the input's path in a way this engine cannot take."""
    raise ctx.unsupported("supported only where it folds to a constant (static shapes)")
