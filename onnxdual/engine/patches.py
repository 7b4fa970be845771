"""Bounds of convolutional units through patches: the backward pass of Theorem 1 on ``c = +/- e_j`` carried
as small windows instead of whole images.

A unit ``j`` of a convolution's output depends only on its receptive field, so its dual row ``nu`` (eq. 8)
below the convolution is zero outside a window: the kernel ``W[c_j]`` placed at the unit's position. Every
element-wise dual layer (the paper's same-slope relaxation, or separate element-wise faces) keeps a row's
support, and every earlier convolution grows it by its own kernel, so along a chain of convolutions and
element-wise activations each row stays a window of ``C x K x K`` values -- for a 7x7 unit grid over a 28x28
input a tenth of the image or less -- and the whole backward pass costs that much less. The values are the
same dual variables as the dense pass (:func:`onnxdual.engine.autodual.dual_parts`), so the bound is the same
up to rounding; only the storage changes (what auto_LiRPA calls "patches mode").

Geometry, per spatial axis: the window of the row of unit position ``p`` starts at ``p * S + O`` in the
coordinates of the value it sits on and has ``K`` entries. Through a convolution with stride ``s``, begin
padding ``q``, dilation ``d`` and kernel ``k`` backwards: ``S' = S s``, ``O' = O s - q``,
``K' = (K - 1) s + d (k - 1) + 1`` (a transposed convolution of the window, without padding). Entries that
fall outside a value's image are zero padding, not units: they are masked (element-wise layers' tensors
are read with zero padding, which masks them by itself).

Used where it applies: a chain (every step one variable input) of 2-d convolutions
(:meth:`~onnxdual.duals.base.AffineDual.local_kernel`) and element-wise activations down to a box input,
with windows smaller than the images they sit on; anything else takes the dense pass.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from onnxdual.duals.base import (ActivationDual, AffineDual, ElementwiseFace, Faces, LocalKernel, Relaxation,
                                 RelaxationFace)
from onnxdual.engine.build import BuiltDual, DualStep
from onnxdual.engine.input_sets import Box, InputSet
from onnxdual.engine.memo import Memo


@dataclass(frozen=True)
class _Geometry:
    """Where the window of the row at unit position ``p`` lies, per axis: from ``p * stride + origin``,
    ``size`` entries."""

    size: tuple[int, int]
    stride: tuple[int, int]
    origin: tuple[int, int]

    def through(self, kernel: LocalKernel) -> "_Geometry":
        k = kernel.weight.shape[2:]
        return _Geometry(
            tuple((self.size[a] - 1) * kernel.stride[a] + kernel.dilation[a] * (k[a] - 1) + 1 for a in (0, 1)),
            tuple(self.stride[a] * kernel.stride[a] for a in (0, 1)),
            tuple(self.origin[a] * kernel.stride[a] - kernel.pads[a] for a in (0, 1)))


@dataclass(frozen=True)
class Plan:
    """A chain from a convolution's output back to the input, with its windows' geometry per step."""

    steps: tuple[DualStep, ...]  # steps[0] makes the bounded value; each next one makes the previous input
    geometries: tuple[_Geometry, ...]  # the window geometry on each step's *input* value
    grid: tuple[int, int]  # the unit positions of the bounded value

    @property
    def largest(self) -> int:
        """Elements of the largest window of one row (sizes memory like a network value does)."""
        return max(s.input_shapes[0][0] * math.prod(g.size) for s, g in zip(self.steps, self.geometries))


def plan(built: BuiltDual, name: str, input_set: InputSet) -> Plan | None:
    """The patch plan for bounding the units of value ``name``, or ``None`` where the dense pass applies
    (not a chain of 2-d convolutions and element-wise activations down to a box, or windows no smaller
    than the images)."""
    if not isinstance(input_set, Box):
        return None
    producers = {s.node.name: s for s in built.steps}
    steps: list[DualStep] = []
    value = name
    while value != built.graph.input_name:
        step = producers.get(value)
        if step is None or len(step.variable_inputs) != 1 or len(step.output_shape) != 3:
            return None
        if isinstance(step.layer, AffineDual):
            if step.layer.local_kernel() is None:
                return None
        elif not isinstance(step.layer, ActivationDual) or not steps:
            return None
        steps.append(step)
        value = step.variable_inputs[0]
    if not steps or len(built.input_shape) != 3:
        return None
    first = steps[0].layer.local_kernel()
    geometry = _Geometry((1, 1), (1, 1), (0, 0)).through(first)
    geometries = [geometry]
    for step in steps[1:]:
        if isinstance(step.layer, AffineDual):
            geometry = geometry.through(step.layer.local_kernel())
        geometries.append(geometry)
    for step, geo in zip(steps, geometries):
        shape = step.input_shapes[0]
        if len(shape) != 3 or math.prod(geo.size) >= shape[1] * shape[2]:
            return None
    return Plan(tuple(steps), tuple(geometries), tuple(steps[0].output_shape[1:]))


def _full_weight(kernel: LocalKernel, channels_in: int) -> Tensor:
    """The kernel as ``(C_out, C_in, kh', kw')`` over all input channels (zeros outside a unit's group) and
    with the dilation's holes written out, so a unit's first window is one row of it."""
    w = kernel.weight
    c_out, per_group = w.shape[:2]
    dh, dw = kernel.dilation
    kh, kw = (w.shape[2] - 1) * dh + 1, (w.shape[3] - 1) * dw + 1
    full = w.new_zeros((c_out, channels_in, kh, kw))
    out_per_group = c_out // kernel.groups
    for g in range(kernel.groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        full[rows, g * per_group:(g + 1) * per_group, ::dh, ::dw] = w[rows]
    return full


class _Windows:
    """Reads ``C x K x K`` windows of tensors on one value at the rows' unit positions (zero outside)."""

    def __init__(self, geo: _Geometry, shape: torch.Size, grid: tuple[int, int], py: Tensor, px: Tensor):
        self.geo, self.shape = geo, shape
        (kh, kw), (sh, sw), (oh, ow) = geo.size, geo.stride, geo.origin
        _, h, w = shape
        self.pads = (-ow, max(0, (grid[1] - 1) * sw + kw - w + ow), -oh, max(0, (grid[0] - 1) * sh + kh - h + oh))
        self.padded = (h + self.pads[2] + self.pads[3], w + self.pads[0] + self.pads[1])
        self.across = (self.padded[1] - kw) // sw + 1
        self.py, self.px = py, px  # (Bu, R)

    def read(self, t: Tensor, batch: int) -> Tensor:
        """``t`` of shape ``(Bt, C, H, W)`` (shared by the rows) or ``(B, R, C, H, W)`` (one per row);
        returns ``(B or Bt, R, C, K, K)``."""
        c = self.shape[0]
        (kh, kw), (sh, sw) = self.geo.size, self.geo.stride
        bu, r = self.py.shape
        if t.dim() == 4:
            # (Bt, L, C*K*K): every window position once (few), then one row per unit (many)
            cols = F.unfold(F.pad(t, self.pads), (kh, kw), stride=(sh, sw)).transpose(1, 2)
            where = self.py * self.across + self.px  # (Bu, R)
            if bu == 1:
                out = cols.index_select(1, where[0])
            else:
                out = torch.gather(cols.expand(batch, -1, -1), 1, where.unsqueeze(-1).expand(-1, -1, cols.shape[2]))
            return out.reshape(out.shape[0], r, c, kh, kw)
        hp, wp = self.padded
        base = (torch.arange(c, device=t.device).view(c, 1, 1) * (hp * wp)
                + torch.arange(kh, device=t.device).view(1, kh, 1) * wp
                + torch.arange(kw, device=t.device).view(1, 1, kw)).flatten()
        start = (self.py * sh) * wp + self.px * sw  # window starts in padded coordinates
        index = (start.unsqueeze(-1) + base).expand(t.shape[0], r, -1)
        flat = F.pad(t.flatten(0, 1), self.pads).reshape(t.shape[0], t.shape[1], -1)
        return torch.gather(flat, 2, index).reshape(t.shape[0], r, c, kh, kw)

    def mask(self) -> Tensor:
        """``(Bu, R, 1, K, K)``: which window entries are inside the image."""
        (kh, kw), (sh, sw), (oh, ow) = self.geo.size, self.geo.stride, self.geo.origin
        _, h, w = self.shape
        ys = self.py.unsqueeze(-1) * sh + oh + torch.arange(kh, device=self.py.device)
        xs = self.px.unsqueeze(-1) * sw + ow + torch.arange(kw, device=self.px.device)
        inside = ((ys >= 0) & (ys < h)).unsqueeze(-1) & ((xs >= 0) & (xs < w)).unsqueeze(-2)
        return inside.unsqueeze(2)


def _positions(p: Plan, units: Tensor) -> tuple[Tensor, Tensor]:
    """The unit positions ``(py, px)`` on the plan's grid of flat unit indices ``units``."""
    where = units % (p.grid[0] * p.grid[1])
    return where // p.grid[1], where % p.grid[1]


class RowWindows:
    """The windows of the rows ``units`` ``(B, R)`` of a plan on the input value of its activation
    ``p.steps[index]``: reads ``(B, *shape)`` tensors as ``(B, R, C, K, K)``, zero outside the image -- the
    coordinates in which :func:`parts` meets that activation's faces. The optimised relaxation keeps the
    free parameters of such a target's rows in these coordinates (:class:`WindowFaces`): a row's dual is
    zero outside its window, so nothing outside it can move the bound."""

    def __init__(self, p: Plan, index: int, units: Tensor, batch: int):
        py, px = _positions(p, units)
        self._windows = _Windows(p.geometries[index], p.steps[index].input_shapes[0], p.grid, py, px)
        self._inside = self._windows.mask()
        self.batch = batch

    def read(self, t: Tensor) -> Tensor:
        """``t`` ``(B, *shape)`` at the windows ``(B, R, C, K, K)``, zero outside the image."""
        return self._windows.read(t, self.batch) * self._inside.to(t.dtype)

    def read_masked(self, t: Tensor) -> Tensor:
        """``t``, already at the windows, zero outside the image."""
        return t * self._inside.to(t.dtype)


@dataclass(frozen=True)
class WindowFaces:
    """Element-wise faces given at the rows' windows of one plan activation (:class:`RowWindows`
    coordinates, tensors ``(B, R, C, K, K)``): :func:`parts` uses them as they are, masked to the image."""

    faces: Faces
    windows: RowWindows


def _elementwise(relax) -> tuple[Tensor, ...] | None:
    """``(slope, mid, half)`` of the paper's relaxation, or ``(lower slope, lower offset, upper slope, upper
    offset)`` of element-wise faces; ``None`` for anything else."""
    if isinstance(relax, WindowFaces):
        relax = relax.faces
    if isinstance(relax, Relaxation):
        return relax.slope, relax.mid, relax.half_width
    if isinstance(relax, Faces):
        lo, up = relax.lower, relax.upper
        if isinstance(lo, ElementwiseFace) and isinstance(up, ElementwiseFace):
            return lo.slope, lo.offset, up.slope, up.offset
        if (isinstance(lo, RelaxationFace) and isinstance(up, RelaxationFace)
                and isinstance(lo.relaxation, Relaxation) and up.relaxation is lo.relaxation):
            return lo.relaxation.slope, lo.offset, lo.relaxation.slope, up.offset
    return None


def supported(p: Plan, relaxations: dict) -> bool:
    """Whether every activation of the plan has an element-wise relaxation in ``relaxations``."""
    return all(_elementwise(relaxations.get(s.node.name)) is not None
               for s in p.steps if isinstance(s.layer, ActivationDual))


def _per_row(t: Tensor, rows: int) -> Tensor:
    """Face tensors are ``(B, *shape)`` or ``(B, K, *shape)``; a row axis of one is shared by every row."""
    if t.dim() == 5 and t.shape[1] == 1:
        return t[:, 0]
    if t.dim() == 5 and t.shape[1] != rows:
        raise ValueError(f"per-row faces have {t.shape[1]} rows where the bound has {rows}")
    return t


def _times(x: Tensor, factor: Tensor | None) -> Tensor:
    return torch.zeros_like(x) if factor is None else x * factor


#: live window tensors per term copy of the dense pass (nu, its two signed parts, the faces read at the
#: windows and their products): how many fewer rows than ``largest_value / window`` fit the same budget
COPIES_PER_TERM = 3

#: per layer, the window-to-window maps already built, with the weights they were built from (keyed weakly:
#: they go with the network)
_MAPS: "weakref.WeakKeyDictionary[AffineDual, dict]" = weakref.WeakKeyDictionary()
#: the largest window-to-window map kept as a dense matrix (elements); larger ones use the convolution
MAP_ELEMENTS = 1 << 23


def _window_map(layer: AffineDual, out_geo: _Geometry, in_geo: _Geometry, dtype: torch.dtype,
                device: torch.device, bias: Tensor | None = None) -> Tensor | None:
    """The transposed kernel as the matrix that carries one output window to its input window (every window
    moves by the same map: the kernel is translation invariant), ``(C_out K K, C_in K' K')``, with ``bias``
    (one number per output channel) as one more column; ``None`` where it would be larger than
    :data:`MAP_ELEMENTS`."""
    kernel = layer.local_kernel()
    shape = (kernel.weight.shape[0], *out_geo.size)
    size = math.prod(shape)
    out_size = (kernel.weight.shape[1] * kernel.groups) * math.prod(in_geo.size)
    if size * out_size > MAP_ELEMENTS:
        return None
    weight = kernel.weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    maps = _MAPS.setdefault(layer, {})
    key = (out_geo, dtype, device, bias is not None)
    cached = maps.get(key)
    # a map is reused only for the very weights it was built from (training changes them in place) and
    # never while they need a gradient (the map would carry an old step's graph)
    differentiable = torch.is_grad_enabled() and (weight.requires_grad or (bias is not None and bias.requires_grad))
    if (differentiable or cached is None or not torch.equal(cached[0], weight.detach())
            or (bias is not None and not torch.equal(cached[1], bias.detach()))):
        eye = torch.eye(size, dtype=dtype, device=device).reshape(size, *shape)
        matrix = F.conv_transpose2d(eye, weight, stride=kernel.stride, dilation=kernel.dilation,
                                    groups=kernel.groups).reshape(size, out_size)
        if bias is not None:
            matrix = torch.cat([matrix, bias.repeat_interleave(math.prod(out_geo.size)).unsqueeze(1)], 1)
        cached = (weight.detach().clone(), None if bias is None else bias.detach().clone(), matrix)
        if not differentiable:
            maps[key] = cached
    return cached[2]


def _transpose(layer: AffineDual, out_geo: _Geometry, in_geo: _Geometry, nu: Tensor) -> Tensor:
    """``nu`` ``(Bu, R, C_out, K, K)`` on the convolution's output windows, carried to its input windows:
    where the window map is small one matrix product (several times faster than a transposed convolution
    of many tiny images), otherwise the transposed convolution itself."""
    lead, size = nu.shape[:2], nu.shape[2:].numel()
    matrix = _window_map(layer, out_geo, in_geo, nu.dtype, nu.device)
    if matrix is not None:
        return (nu.reshape(-1, size) @ matrix).reshape(*lead, -1, *in_geo.size)
    kernel = layer.local_kernel()
    moved = F.conv_transpose2d(nu.flatten(0, 1), kernel.weight.to(nu.dtype), stride=kernel.stride,
                               dilation=kernel.dilation, groups=kernel.groups)
    return moved.reshape(*lead, *moved.shape[1:])


class _AddProduct(torch.autograd.Function):
    """``base + x * a`` (``addcmul``) whose backward computes each needed gradient with one product (the
    built-in one scales by its ``value`` first: one more tensor of the largest size per iteration)."""

    @staticmethod
    def forward(ctx, base: Tensor, x: Tensor, a: Tensor) -> Tensor:
        ctx.save_for_backward(x, a)
        return torch.addcmul(base, x, a)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, a = ctx.saved_tensors
        need_base, need_x, need_a = ctx.needs_input_grad
        return (grad if need_base else None, grad * a if need_x else None, grad * x if need_a else None)


def _channel_offset(offset: Tensor) -> Tensor | None:
    """A ``(1, C, H, W)`` offset that is one number per channel (a convolution's bias), as ``(C,)``."""
    if offset.dim() != 4 or offset.shape[0] != 1:
        return None
    flat = offset[0].flatten(1)
    return flat[:, 0] if bool((flat == flat[:, :1]).all()) else None


def parts(p: Plan, built: BuiltDual, input_set: Box, relaxations: dict, units: Tensor, signs: Tensor,
          offsets: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """The two parts of the dual objective (as :func:`~onnxdual.engine.autodual.dual_parts`) of the rows
    ``signs * e_units`` on the plan's value: ``units`` (flat unit indices) and ``signs`` are ``(1 or B, R)``;
    returns two ``(B, R)``."""
    return Rows(p, built, input_set, units, signs, offsets).parts(relaxations)


class Rows:
    """The rows ``signs * e_units`` of one plan, set up once for bounding them on many relaxations (the
    optimised relaxation bounds a target's rows at every iteration): the window geometry, the masks, the
    starting dual and the input's centre and radius at the windows are computed here. With ``reuse``, every
    later product of tensors that are the same as last time (same tensor, unchanged, no gradient) is
    remembered -- the dual is constant down to the first activation whose faces move, and an activation
    whose bounds are not re-optimised keeps its face tensors -- so an iteration computes only what changed.
    The values are those of the plain pass, operation for operation."""

    def __init__(self, p: Plan, built: BuiltDual, input_set: Box, units: Tensor, signs: Tensor,
                 offsets: dict[str, Tensor], reuse: bool = False):
        self.p, self.offsets = p, offsets
        self.batch, self.r = input_set.center.shape[0], units.shape[1]
        self._memo = Memo(enabled=reuse)
        start = p.steps[0]
        channel = units // (p.grid[0] * p.grid[1])
        py, px = _positions(p, units)
        signs = signs.to(input_set.center.dtype)
        if start.node.name not in offsets:
            offsets[start.node.name] = start.layer.offset().to(signs.dtype)
        bias = offsets[start.node.name].flatten(1)
        self._linear = signs * (bias[:, units[0]] if units.shape[0] == 1
                                else torch.gather(bias.expand(self.batch, -1), 1, units))
        weight = _full_weight(start.layer.local_kernel(), start.input_shapes[0][0]).to(signs.dtype)
        self._nu = weight[channel] * signs.view(*signs.shape, 1, 1, 1)  # (Bu, R, C, K, K)
        self._windows = [_Windows(p.geometries[i], step.input_shapes[0], p.grid, py, px)
                         for i, step in enumerate(p.steps)]
        self._masks = {i: self._windows[i].mask().to(signs.dtype) for i, step in enumerate(p.steps)
                       if isinstance(step.layer, ActivationDual)}
        # on a convolution's output (the previous geometry): which entries are padding, and its offset
        self._out = {i: _Windows(p.geometries[i - 1], step.output_shape, p.grid, py, px)
                     for i, step in enumerate(p.steps) if i > 0 and isinstance(step.layer, AffineDual)}
        self._out_masks = {i: w.mask().to(signs.dtype) for i, w in self._out.items()}
        last = _Windows(p.geometries[-1], built.input_shape, p.grid, py, px)
        inside = last.mask().to(signs.dtype)  # zero outside the image: the dual there is dropped
        self._center = last.read(input_set.center, self.batch) * inside
        self._radius = last.read(input_set.radius, self.batch) * inside

    def parts(self, relaxations: dict) -> tuple[Tensor, Tensor]:
        """The two parts ``(B, R)`` of the rows' dual objective on ``relaxations`` (element-wise ones for
        every activation of the plan; :class:`WindowFaces` where they are given at the windows)."""
        p, batch, r, memo = self.p, self.batch, self.r, self._memo
        linear, spread = self._linear, torch.zeros_like(self._linear)
        nu = self._nu
        masked = False  # nu is zero outside the image on the value it sits on
        for i, step in enumerate(p.steps):
            windows = self._windows[i]
            if i > 0 and isinstance(step.layer, AffineDual):
                # nu sits on this convolution's output (with the previous geometry): drop the padding entries
                # (unless an activation's window faces just did, on the same windows), add the offset term,
                # then carry it through the transposed kernel
                if step.node.name not in self.offsets:
                    self.offsets[step.node.name] = step.layer.offset().to(nu.dtype)
                offset = self.offsets[step.node.name]
                was_masked, masked = masked, False
                bias = memo((i, "bias"), (offset,), _channel_offset) if was_masked else None
                folded = None if bias is None else _window_map(step.layer, p.geometries[i - 1], p.geometries[i],
                                                               nu.dtype, nu.device, bias)
                if folded is not None:
                    # nu is zero outside the image, so a per-channel offset's term is one more column of the
                    # window map: the offset term and the carried dual in one product
                    both = nu.reshape(-1, folded.shape[0]) @ folded
                    linear = linear + both[:, -1].reshape(nu.shape[:2])
                    nu = both[:, :-1].reshape(*nu.shape[:2], -1, *p.geometries[i].size)
                    continue
                if not was_masked:
                    nu = memo((i, "mask"), (nu,), lambda v: v * self._out_masks[i])
                if memo((i, "offset?"), (offset,), lambda o: bool(o.any())):
                    read = memo((i, "offset"), (offset,), lambda o: self._out[i].read(
                        o.expand(-1, *step.output_shape), batch))
                    linear = linear + memo((i, "offset term"), (nu, read), lambda v, o: (v * o).flatten(2).sum(-1))
                nu = memo((i, "transpose"), (nu, step.layer.local_kernel().weight), lambda v, _: _transpose(
                    step.layer, p.geometries[i - 1], p.geometries[i], v))
            elif isinstance(step.layer, ActivationDual):
                given = relaxations[step.node.name]
                rel = _elementwise(given)
                if rel is None:
                    raise ValueError(f"{step.node.name} has no element-wise relaxation: patches do not apply")
                # zero tensors (ReLU's lower offset, stable layers' gaps) are neither read nor multiplied
                nonzero = [memo((i, j, "any"), (t,), lambda t: bool(t.any())) for j, t in enumerate(rel)]
                if isinstance(given, WindowFaces):  # already at the windows
                    # outside the image the row's dual is dropped here, once, instead of masking every face
                    # tensor (the same products where faces are finite, as they are on the zero bounds there)
                    nu = memo((i, "mask"), (nu,), lambda v: v * self._masks[i])
                    read = [t if keep else None for t, keep in zip(rel, nonzero)]
                else:
                    read = [memo((i, j, "read"), (t,), lambda t: windows.read(_per_row(t, r), batch)) if keep
                            else None for j, (t, keep) in enumerate(zip(rel, nonzero))]
                if len(read) == 3:  # the paper's relaxation: linear in nu (eq. 10 in same-slope form)
                    slope, mid, half = read
                    if mid is not None:
                        linear = linear + memo((i, "mid"), (nu, mid), lambda v, m: (v * m).flatten(2).sum(-1))
                    if half is not None:
                        spread = spread + memo((i, "half"), (nu, half),
                                               lambda v, h: (v.abs() * h).flatten(2).sum(-1))
                    nu = memo((i, "slope"), (nu, slope), lambda v, a: v * a if a is not None else torch.zeros_like(v))
                else:  # separate faces: positive entries take the lower face, negative ones the upper
                    lo_slope, lo_off, up_slope, up_off = read
                    pos = memo((i, "pos"), (nu,), lambda v: v.clamp(min=0))
                    neg = memo((i, "neg"), (nu, pos), lambda v, q: v - q)
                    for side, part, off in (("lower", pos, lo_off), ("upper", neg, up_off)):
                        if off is not None:
                            linear = linear + memo((i, side, "term"), (part, off),
                                                   lambda v, o: (v * o).flatten(2).sum(-1))
                    upper = memo((i, "upper"), (neg, up_slope), _times)
                    nu = (_AddProduct.apply(upper, pos, lo_slope) if lo_slope is not None and lo_slope.requires_grad
                          else memo((i, "lower"), (pos, lo_slope), _times) + upper)
                # zero outside the image from here: faces at the windows are masked, faces read at them are
                # zero there (finite faces times zero)
                masked = True
        linear = linear + (nu * self._center).flatten(2).sum(-1)
        spread = spread + (nu.abs() * self._radius).flatten(2).sum(-1)
        return linear.expand(batch, r), spread.expand(batch, r)
