"""MaxPool for onnxdual (ONNX ``MaxPool``, 1-d to 3-d, any kernel, stride, dilation, padding, ceil mode).

MaxPool is not element-wise, so its relaxation is a :class:`onnxdual.LinearRelaxation` whose linear map
*selects* one input per output window. Given input bounds ``l <= x <= u``, each window picks the input
``j*`` with the largest lower bound; then for every ``x`` in the box

    x_j*  <=  max_i x_i  <=  x_j* + max(0, max_{i != j*} u_i - l_j*)

(the left side because the maximum is at least any of its entries, the right side because
``max_i x_i - x_j* = max(0, max_{i != j*} (x_i - x_j*))``). So ``A x`` = the selected inputs, ``low = 0`` and
``high`` = that gap, which is 0 when ``j*`` provably wins its window: then the dual is exact there.
Padded positions hold ``-inf`` and never win or count, as in ONNX.

Separate faces (the tighter relaxations): the lower face is the selection itself (``max_i x_i >= x_j*``,
offset 0); the upper face is, per window, the better of ``x_j* + gap`` and the constant ``max_i u_i`` (both
hold on the box; the constant wins when the window is undecided and wide), judged at the box's centre.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from onnxdual import ActivationDual, Face, Faces, LinearRelaxation, NodeContext, RelaxationFace


class SelectionRelaxation(LinearRelaxation):
    """``A x``: for every example and output element, the input element ``index[b, o]`` (flat indices over
    the per-example input); ``low``/``high`` of shape ``(B, *out_shape)``."""

    def __init__(self, index: Tensor, in_shape: torch.Size, out_shape: torch.Size, low: Tensor, high: Tensor):
        self.index, self.in_shape, self.out_shape = index, in_shape, out_shape
        self.low, self.high = low, high

    def apply(self, x: Tensor) -> Tensor:
        batch, k = self.index.shape[0], x.shape[1]  # k may be 0 (e.g. a box with no perturbed input)
        flat = x.reshape(x.shape[0], k, math.prod(self.in_shape)).expand(batch, k, -1)
        out = flat.gather(2, self.index.unsqueeze(1).expand(batch, k, -1))
        return out.reshape(batch, k, *self.out_shape)

    def transpose(self, nu: Tensor) -> Tensor:
        batch, k = self.index.shape[0], nu.shape[1]
        flat = nu.reshape(nu.shape[0], k, math.prod(self.out_shape)).expand(batch, k, -1)
        out = torch.zeros((batch, k, math.prod(self.in_shape)), dtype=nu.dtype, device=nu.device)
        out.scatter_add_(2, self.index.unsqueeze(1).expand(batch, k, -1), flat)
        return out.reshape(batch, k, *self.in_shape)


class MaskedSelectionFace(Face):
    """The selection ``x_j*`` where ``keep`` (1) and nothing where not (0), plus ``offset``: an upper face
    that mixes ``x_j* + gap`` and the constant ``max u`` window by window."""

    def __init__(self, relaxation: SelectionRelaxation, keep: Tensor, offset: Tensor):
        self.relaxation, self.keep, self.offset = relaxation, keep, offset

    def transpose(self, nu: Tensor) -> Tensor:
        keep = self.keep if self.keep.dim() == nu.dim() else self.keep.unsqueeze(1)
        return self.relaxation.transpose(nu * keep)

    def offset_term(self, nu: Tensor) -> Tensor:
        return (nu.flatten(2) @ self.offset.flatten(1).unsqueeze(-1)).squeeze(-1)


def _as_text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class MaxPoolDual(ActivationDual):
    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        attrs = ctx.attributes
        in_shape = ctx.input_shapes[0]
        spatial = tuple(int(d) for d in in_shape[1:])
        nd = len(spatial)
        if nd < 1:
            raise ctx.unsupported("MaxPool needs an input of shape (channels, *spatial)")
        self.kernel = tuple(int(k) for k in attrs["kernel_shape"])
        self.strides = tuple(int(s) for s in attrs.get("strides", [1] * nd))
        self.dilations = tuple(int(d) for d in attrs.get("dilations", [1] * nd))
        spans = [d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilations)]
        if _as_text(attrs.get("auto_pad", "NOTSET")) != "NOTSET":  # onnxdual.load writes explicit pads
            raise ctx.unsupported("auto_pad without known input shapes; give explicit pads")
        pads = [int(p) for p in attrs.get("pads", [0] * (2 * nd))]
        out_spatial = tuple(int(d) for d in ctx.output_shape[1:])
        # extra padding at the end reproduces ceil_mode's last, partial windows (checked against the output)
        for d in range(nd):
            needed = (out_spatial[d] - 1) * self.strides[d] + spans[d] - (spatial[d] + pads[d] + pads[nd + d])
            pads[nd + d] += max(0, needed)
        self.pads = pads  # ONNX order: all begins, then all ends
        windows = [(spatial[d] + pads[d] + pads[nd + d] - spans[d]) // self.strides[d] + 1 for d in range(nd)]
        if tuple(windows) != out_spatial:
            raise ctx.unsupported(f"cannot reproduce this MaxPool's output shape {list(ctx.output_shape)}")
        self.in_shape, self.out_shape = in_shape, ctx.output_shape
        # flat input position of every window entry (-1: padding), shared by channels and examples
        positions = torch.arange(math.prod(spatial), dtype=torch.float64).reshape(1, 1, *spatial)
        self.positions = self._windows(positions, -1.0).long()  # (1, 1, *out_spatial, K)

    def _windows(self, x: Tensor, fill: float) -> Tensor:
        """``(N, C, *spatial)`` -> ``(N, C, *out_spatial, K)``: every window's entries (padding = fill)."""
        nd = len(self.kernel)
        torch_pads = []
        for d in reversed(range(nd)):  # F.pad order: last dimension first
            torch_pads += [self.pads[d], self.pads[nd + d]]
        x = torch.nn.functional.pad(x, torch_pads, value=fill)
        for d in range(nd):
            span = self.dilations[d] * (self.kernel[d] - 1) + 1
            x = x.unfold(2 + d, span, self.strides[d])[..., :: self.dilations[d]]
        return x.flatten(-nd)

    def faces(self, lower: Tensor, upper: Tensor) -> Faces:
        relax = self.relax(lower, upper)
        top = self._windows(upper, -math.inf).amax(-1)  # max_i u_i per window
        centre = relax.apply(((lower + upper) / 2).unsqueeze(1)).squeeze(1)
        keep = (centre + relax.high <= top).to(lower.dtype)  # the selection face is lower at the centre
        offset = torch.where(keep.bool(), relax.high, top)
        return Faces(RelaxationFace(relax, relax.low), MaskedSelectionFace(relax, keep, offset))

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        return self._windows(lower, -math.inf).amax(-1), self._windows(upper, -math.inf).amax(-1)

    def relax(self, lower: Tensor, upper: Tensor) -> SelectionRelaxation:
        lw = self._windows(lower, -math.inf)
        uw = self._windows(upper, -math.inf)
        best = lw.argmax(-1, keepdim=True)  # the input with the largest lower bound
        l_best = lw.gather(-1, best)
        others = uw.scatter(-1, best, -math.inf).amax(-1, keepdim=True)
        high = torch.clamp(others - l_best, min=0.0).squeeze(-1)
        channels, n_spatial = self.in_shape[0], math.prod(self.in_shape[1:])
        positions = self.positions.to(lower.device)
        positions = positions.expand(lower.shape[0], channels, *positions.shape[2:])
        chosen = positions.gather(-1, best).squeeze(-1)  # (B, C, *out_spatial), never padding
        offsets = (torch.arange(channels, device=lower.device) * n_spatial).reshape(1, channels,
                                                                                   *[1] * (lower.dim() - 2))
        index = (chosen + offsets).reshape(lower.shape[0], -1)
        return SelectionRelaxation(index, self.in_shape, self.out_shape, torch.zeros_like(high), high)


def maxpool_dual(ctx: NodeContext) -> MaxPoolDual:
    if len(ctx.variable_positions) != 1:
        raise ctx.unsupported("MaxPool must have one variable input")
    return MaxPoolDual(ctx)
