"""Random small ONNX networks, built node by node with ``onnx.helper``, each with an exact description.

Every generator returns a :class:`Network`: the ONNX model (opset 17, float32, one input ``"input"`` with a
dynamic batch dimension ``"N"``) together with a list of :class:`Layer` s -- a DAG of dense affine maps
(float64 matrices and biases), ReLUs and Clips -- that computes the same function on flattened values.

The dense matrix of every affine node is obtained by *probing* a numpy re-implementation of the ONNX
operator (written here, independently of the engine and of onnx2torch) with the unit vectors; the
description is compared with onnxruntime in the tests, so a mistake in either shows up there.

Weights are scaled (``gain / sqrt(fan_in)``, biases of the same order as the activations) so that, for
inputs in ``[-1, 1]`` and radii of a few tenths, many ReLUs cross zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
INPUT = "input"
F32 = np.float32


# -- the description ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    """One node of the description. ``name`` is the ONNX node name and its output name.

    * ``kind == "affine"``: ``y = sum_i mats[i] @ value(inputs[i]) + bias`` on flattened values;
    * ``kind == "relu"``: ``y = max(x, 0)``;
    * ``kind == "clip"``: ``y = min(max(x, lo), hi)`` (``lo``/``hi`` may be infinite).
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    op_type: str
    mats: tuple[np.ndarray, ...] = ()
    bias: np.ndarray | None = None
    lo: float = -math.inf
    hi: float = math.inf

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def is_activation(self) -> bool:
        return self.kind in ("relu", "clip")


@dataclass
class Network:
    name: str
    family: str
    input_shape: tuple[int, ...]
    layers: list[Layer]
    output: str
    model: onnx.ModelProto

    @property
    def n_in(self) -> int:
        return int(np.prod(self.input_shape, dtype=np.int64))

    @property
    def n_out(self) -> int:
        return self.layer(self.output).size

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def activations(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.is_activation]

    def evaluate(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every value of the network (flattened, float64, ``(B, size)``) for inputs ``(B, *input_shape)``."""
        x = np.asarray(x, dtype=np.float64)
        values = {INPUT: x.reshape(x.shape[0], -1)}
        for layer in self.layers:
            if layer.kind == "affine":
                y = layer.bias[None, :].repeat(x.shape[0], 0)
                for src, mat in zip(layer.inputs, layer.mats):
                    y = y + values[src] @ mat.T
            elif layer.kind == "relu":
                y = np.maximum(values[layer.inputs[0]], 0.0)
            else:
                y = np.minimum(np.maximum(values[layer.inputs[0]], layer.lo), layer.hi)
            values[layer.name] = y
        return values

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The network output ``(B, n_out)`` (float64)."""
        return self.evaluate(x)[self.output]

    def preactivations(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The input value of every activation node, keyed by the activation's name: ``(B, size)``."""
        values = self.evaluate(x)
        return {layer.name: values[layer.inputs[0]] for layer in self.activations()}

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """``d output / d input`` at ``x``: ``(B, n_out, n_in)`` (one-sided at kinks: ReLU'(0) = 0)."""
        values = self.evaluate(x)
        b = values[INPUT].shape[0]
        jac = {INPUT: np.broadcast_to(np.eye(self.n_in), (b, self.n_in, self.n_in))}
        for layer in self.layers:
            if layer.kind == "affine":
                j = sum(np.einsum("oi,bin->bon", mat, jac[src]) for src, mat in zip(layer.inputs, layer.mats))
            else:
                z = values[layer.inputs[0]]
                gate = (z > 0) if layer.kind == "relu" else ((z > layer.lo) & (z < layer.hi))
                j = gate[:, :, None] * jac[layer.inputs[0]]
            jac[layer.name] = j
        return jac[self.output]

    def interval_bounds(self, lower: np.ndarray, upper: np.ndarray,
                        ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Plain interval arithmetic (sound, float64) over the box ``lower <= x <= upper`` of one example:
        ``name -> (l, u)`` flattened, for the input and every layer."""
        lo = np.asarray(lower, dtype=np.float64).reshape(-1)
        hi = np.asarray(upper, dtype=np.float64).reshape(-1)
        out = {INPUT: (lo, hi)}
        for layer in self.layers:
            if layer.kind == "affine":
                mid, rad = layer.bias.copy(), np.zeros(layer.size)
                for src, mat in zip(layer.inputs, layer.mats):
                    l, u = out[src]
                    mid = mid + mat @ ((l + u) / 2)
                    rad = rad + np.abs(mat) @ ((u - l) / 2)
                # widen by a few ulps of the magnitudes involved: the box stays a sound enclosure
                slack = 1e-12 * (1 + np.abs(mid) + rad)
                out[layer.name] = (mid - rad - slack, mid + rad + slack)
            elif layer.kind == "relu":
                l, u = out[layer.inputs[0]]
                out[layer.name] = (np.maximum(l, 0), np.maximum(u, 0))
            else:
                l, u = out[layer.inputs[0]]
                out[layer.name] = (np.clip(l, layer.lo, layer.hi), np.clip(u, layer.lo, layer.hi))
        return out


# -- numpy semantics of the ONNX operators used (on (B, *shape) float64 arrays) ------------------------
def np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides, pads, dilations,
            group: int) -> np.ndarray:
    """ONNX Conv (2-D): ``pads = [top, left, bottom, right]``."""
    batch, cin, _, _ = x.shape
    cout, cg, kh, kw = w.shape
    sh, sw = strides
    dh, dw = dilations
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((batch, cout, ho, wo))
    per_group = cout // group
    for g in range(group):
        wg = w[g * per_group:(g + 1) * per_group]
        xg = xp[:, g * cg:(g + 1) * cg]
        for i in range(ho):
            for j in range(wo):
                patch = xg[:, :, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
                out[:, g * per_group:(g + 1) * per_group, i, j] = np.einsum("bckl,mckl->bm", patch, wg)
    if b is not None:
        out = out + b[None, :, None, None]
    return out


def np_avgpool(x: np.ndarray, kernel, strides, pads, count_include_pad: int) -> np.ndarray:
    """ONNX AveragePool (2-D, ceil_mode 0)."""
    kh, kw = kernel
    sh, sw = strides
    widths = ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3]))
    xp = np.pad(x, widths)
    ones = np.pad(np.ones(x.shape[2:]), widths[2:])
    ho = (xp.shape[2] - kh) // sh + 1
    wo = (xp.shape[3] - kw) // sw + 1
    out = np.zeros((x.shape[0], x.shape[1], ho, wo))
    for i in range(ho):
        for j in range(wo):
            window = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            count = kh * kw if count_include_pad else ones[i * sh:i * sh + kh, j * sw:j * sw + kw].sum()
            out[:, :, i, j] = window.sum(axis=(2, 3)) / count
    return out


def np_batchnorm(x: np.ndarray, scale, bias, mean, var, epsilon: float) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    f = lambda a: np.asarray(a, dtype=np.float64).reshape(shape)  # noqa: E731
    return (x - f(mean)) / np.sqrt(f(var) + epsilon) * f(scale) + f(bias)


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


# -- the builder: ONNX nodes and the description side by side ------------------------------------------
class Builder:
    """Adds ONNX nodes and, for each, the matching :class:`Layer` of the description."""

    def __init__(self, family: str, input_shape: tuple[int, ...], rng: np.random.Generator):
        self.family, self.rng = family, rng
        self.input_shape = tuple(int(s) for s in input_shape)
        self.shapes: dict[str, tuple[int, ...]] = {INPUT: self.input_shape}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.layers: list[Layer] = []
        self._count: dict[str, int] = {}

    def _name(self, prefix: str) -> str:
        i = self._count.get(prefix, 0)
        self._count[prefix] = i + 1
        return f"{prefix}_{i}"

    def size(self, name: str) -> int:
        return int(np.prod(self.shapes[name], dtype=np.int64))

    # constants
    def const(self, value, dtype=F32, as_node: bool = False) -> str:
        name = self._name("const")
        arr = np.asarray(value, dtype=dtype)
        tensor = numpy_helper.from_array(arr, name)
        if as_node:
            self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=tensor))
        else:
            self.inits.append(tensor)
        return name

    # generic nodes
    def affine(self, op_type: str, onnx_inputs: list[str], variables: list[str],
               fn: Callable[..., np.ndarray], prefix: str | None = None, **attrs) -> str:
        """An ONNX node affine in its ``variables``; ``fn(*values)`` is its numpy semantics on
        ``(B, *shape)`` float64 arrays. Its dense matrices come from probing ``fn`` with unit vectors."""
        name = self._name(prefix or op_type.lower())
        self.nodes.append(helper.make_node(op_type, onnx_inputs, [name], name=name, **attrs))
        in_shapes = [self.shapes[v] for v in variables]
        base = np.asarray(fn(*[np.zeros((1, *s)) for s in in_shapes]), dtype=np.float64)
        shape = tuple(int(s) for s in base.shape[1:])
        bias = base.reshape(-1)
        mats = []
        for i, s in enumerate(in_shapes):
            n = int(np.prod(s, dtype=np.int64))
            probe = [np.zeros((n, *t)) for t in in_shapes]
            probe[i] = np.eye(n).reshape(n, *s)
            cols = np.asarray(fn(*probe), dtype=np.float64).reshape(n, -1) - bias
            mats.append(np.ascontiguousarray(cols.T))
        self.shapes[name] = shape
        self.layers.append(Layer(name, "affine", tuple(variables), shape, op_type, tuple(mats), bias))
        return name

    def relu(self, x: str) -> str:
        name = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [name], name=name))
        self.shapes[name] = self.shapes[x]
        self.layers.append(Layer(name, "relu", (x,), self.shapes[x], "Relu"))
        return name

    def clip(self, x: str, lo: float | None, hi: float | None) -> str:
        name = self._name("clip")
        inputs = [x, "" if lo is None else self.const(lo), "" if hi is None else self.const(hi)]
        while inputs[-1] == "":
            inputs.pop()
        self.nodes.append(helper.make_node("Clip", inputs, [name], name=name))
        self.shapes[name] = self.shapes[x]
        self.layers.append(Layer(name, "clip", (x,), self.shapes[x], "Clip",
                                 lo=-math.inf if lo is None else float(F32(lo)),
                                 hi=math.inf if hi is None else float(F32(hi))))
        return name

    # weighted layers
    def weights(self, shape, fan_in: int, gain: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * gain / math.sqrt(fan_in)).astype(F32)

    def dense(self, x: str, n_out: int, gain: float = 1.2, bias_scale: float = 0.4,
              style: str | None = None) -> str:
        """A fully connected layer in one of several ONNX spellings."""
        rng = self.rng
        n_in = self.size(x)
        if len(self.shapes[x]) != 1:
            x = self.flatten(x)
        w = self.weights((n_out, n_in), n_in, gain)
        b = (rng.standard_normal(n_out) * bias_scale).astype(F32)
        style = style or str(rng.choice(["gemm_t", "gemm_t", "gemm", "gemm_nobias", "matmul_add", "gemm_ab"]))
        if style == "gemm_t":
            return self.affine("Gemm", [x, self.const(w), self.const(b)], [x],
                               lambda h: h @ _f64(w).T + _f64(b), transB=1)
        if style == "gemm":
            return self.affine("Gemm", [x, self.const(w.T.copy()), self.const(b)], [x],
                               lambda h: h @ _f64(w).T + _f64(b))
        if style == "gemm_nobias":
            return self.affine("Gemm", [x, self.const(w)], [x], lambda h: h @ _f64(w).T, transB=1)
        if style == "gemm_ab":
            alpha, beta = float(F32(rng.uniform(0.5, 1.5))), float(F32(rng.uniform(0.5, 1.5)))
            return self.affine("Gemm", [x, self.const(w), self.const(b)], [x],
                               lambda h: alpha * (h @ _f64(w).T) + beta * _f64(b), transB=1, alpha=alpha,
                               beta=beta)
        # MatMul then Add of the bias (sometimes bias first: Add(b, h))
        m = self.affine("MatMul", [x, self.const(w.T.copy())], [x], lambda h: h @ _f64(w).T)
        cb = self.const(b)
        ins = [m, cb] if rng.random() < 0.5 else [cb, m]
        return self.affine("Add", ins, [m], lambda h: h + _f64(b))

    def conv(self, x: str, cout: int, kernel: int, stride: int = 1, pads=(0, 0, 0, 0), dilation: int = 1,
             group: int = 1, bias: bool = True, gain: float = 1.3) -> str:
        cin = self.shapes[x][0]
        fan_in = cin // group * kernel * kernel
        w = self.weights((cout, cin // group, kernel, kernel), fan_in, gain)
        b = (self.rng.standard_normal(cout) * 0.4).astype(F32) if bias else None
        inputs = [x, self.const(w)] + ([self.const(b)] if bias else [])
        attrs = dict(kernel_shape=[kernel, kernel], strides=[stride, stride], pads=list(pads),
                     dilations=[dilation, dilation])
        if group != 1:
            attrs["group"] = group
        return self.affine("Conv", inputs, [x], lambda h: np_conv(h, _f64(w), None if b is None else _f64(b),
                                                                 (stride, stride), pads, (dilation, dilation),
                                                                 group), **attrs)

    def batchnorm(self, x: str) -> str:
        c = self.shapes[x][0]
        rng = self.rng
        scale = rng.uniform(0.5, 2.0, c).astype(F32) * rng.choice([-1, 1], c).astype(F32)
        bias = (rng.standard_normal(c) * 0.3).astype(F32)
        mean = (rng.standard_normal(c) * 0.3).astype(F32)
        var = rng.uniform(0.3, 2.0, c).astype(F32)
        epsilon = float(F32(1e-3))
        return self.affine("BatchNormalization",
                           [x, self.const(scale), self.const(bias), self.const(mean), self.const(var)], [x],
                           lambda h: np_batchnorm(h, scale, bias, mean, var, epsilon), epsilon=epsilon)

    def avgpool(self, x: str, kernel: int, stride: int, pads=(0, 0, 0, 0), count_include_pad: int = 0) -> str:
        attrs = dict(kernel_shape=[kernel, kernel], strides=[stride, stride])
        if any(pads):
            attrs.update(pads=list(pads), count_include_pad=count_include_pad)
        def fn(h):
            return np_avgpool(h, (kernel, kernel), (stride, stride), pads, count_include_pad)

        return self.affine("AveragePool", [x], [x], fn, **attrs)

    def global_avgpool(self, x: str) -> str:
        return self.affine("GlobalAveragePool", [x], [x], lambda h: h.mean(axis=(2, 3), keepdims=True))

    def pad(self, x: str, pads_hw, value: float) -> str:
        """Constant Pad of the spatial axes of a (C, H, W) value; ``pads_hw = [top, left, bottom, right]``."""
        t, l, b_, r = (int(p) for p in pads_hw)
        pads = np.array([0, 0, t, l, 0, 0, b_, r], dtype=np.int64)
        v = float(F32(value))
        inputs = [x, self.const(pads, np.int64)]
        if v != 0.0 or self.rng.random() < 0.5:  # the constant value is optional (default 0)
            inputs.append(self.const(v))
        return self.affine("Pad", inputs, [x],
                           lambda h: np.pad(h, ((0, 0), (0, 0), (t, b_), (l, r)), constant_values=v),
                           mode="constant")

    def flatten(self, x: str) -> str:
        return self.affine("Flatten", [x], [x], lambda h: h.reshape(h.shape[0], -1), axis=1)

    def reshape_flat(self, x: str) -> str:
        n = self.size(x)
        target = [0, -1] if self.rng.random() < 0.5 else [-1, n]
        return self.affine("Reshape", [x, self.const(np.array(target, dtype=np.int64), np.int64)], [x],
                           lambda h: h.reshape(h.shape[0], -1))

    def transpose(self, x: str, perm: list[int]) -> str:
        return self.affine("Transpose", [x], [x], lambda h: np.transpose(h, perm), perm=perm)

    def add2(self, a: str, b: str, op: str = "Add") -> str:
        sign = 1.0 if op == "Add" else -1.0
        return self.affine(op, [a, b], [a, b], lambda p, q: p + sign * q)

    def sprinkle(self, x: str) -> str:
        """Sometimes one shape-preserving affine node of a random kind (Identity, Dropout, Neg, Mul/Add/Sub
        by a constant on either side, Div by a constant)."""
        rng = self.rng
        shape = self.shapes[x]
        kind = str(rng.choice(["none", "none", "identity", "dropout", "neg", "mul", "add", "rsub", "div"]))
        if kind == "none":
            return x
        if kind == "identity":
            return self.affine("Identity", [x], [x], lambda h: h)
        if kind == "dropout":
            return self.affine("Dropout", [x], [x], lambda h: h)
        if kind == "neg":
            return self.affine("Neg", [x], [x], lambda h: -h)
        # constants broadcast over the last axis, or a scalar
        cshape = (shape[-1],) if rng.random() < 0.5 else ()
        if kind == "mul":
            k = (rng.uniform(0.5, 1.5, cshape) * rng.choice([-1, 1], cshape)).astype(F32)
            ins = [x, self.const(k)] if rng.random() < 0.5 else [self.const(k), x]
            return self.affine("Mul", ins, [x], lambda h: h * _f64(k))
        if kind == "div":
            k = (rng.uniform(0.5, 2.0, cshape) * rng.choice([-1, 1], cshape)).astype(F32)
            return self.affine("Div", [x, self.const(k)], [x], lambda h: h / _f64(k))
        k = (rng.standard_normal(cshape) * 0.3).astype(F32)
        if kind == "add":
            ins = [x, self.const(k)] if rng.random() < 0.5 else [self.const(k), x]
            return self.affine("Add", ins, [x], lambda h: h + _f64(k))
        return self.affine("Sub", [self.const(k), x], [x], lambda h: _f64(k) - h)  # rsub: k - x

    def finish(self, out: str, name: str) -> Network:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", *self.input_shape])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", *self.shapes[out]])],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="onnxdual-tests")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return Network(name, self.family, self.input_shape, list(self.layers), out, model)


# -- generators ---------------------------------------------------------------------------------------
def _clip_limits(rng: np.random.Generator) -> tuple[float | None, float | None]:
    which = rng.choice(["both", "both", "lo", "hi"])
    lo = float(rng.uniform(-0.8, 0.1)) if which in ("both", "lo") else None
    hi = float(rng.uniform(0.3, 1.5)) if which in ("both", "hi") else None
    return lo, hi


def dense_net(rng: np.random.Generator, *, normalise: bool | None = None, clip: bool | None = None,
              n_in: int | None = None, hidden: list[int] | None = None, n_out: int | None = None,
              sprinkle: bool = True) -> Network:
    """(a) Dense ReLU network, optionally with a leading normalisation (Sub/Div by constants) and a Clip
    activation in place of one ReLU (or after one)."""
    n_in = int(rng.integers(2, 7)) if n_in is None else n_in
    hidden = [int(rng.integers(3, 11)) for _ in range(int(rng.integers(1, 4)))] if hidden is None else hidden
    n_out = int(rng.integers(2, 5)) if n_out is None else n_out
    normalise = bool(rng.random() < 0.5) if normalise is None else normalise
    clip = bool(rng.random() < 0.4) if clip is None else clip
    b = Builder("dense", (n_in,), rng)
    h = INPUT
    if normalise:
        mean = rng.uniform(-0.5, 0.5, n_in).astype(F32)
        std = rng.uniform(0.5, 2.0, n_in).astype(F32)
        mean_name = b.const(mean, as_node=bool(rng.random() < 0.5))
        h = b.affine("Sub", [h, mean_name], [h], lambda v: v - _f64(mean))
        h = b.affine("Div", [h, b.const(std)], [h], lambda v: v / _f64(std))
    edge = rng.random(2)  # activations at the very ends: on the input itself, on the output
    if edge[0] < 0.2:  # e.g. a model that clips its input to the data domain
        h = b.relu(h) if rng.random() < 0.5 else b.clip(h, *_clip_limits(rng))
    clip_at = int(rng.integers(0, len(hidden))) if clip else -1
    clip_after_relu = bool(rng.random() < 0.3)
    gain = 1.0 if normalise else 1.3
    for i, width in enumerate(hidden):
        h = b.dense(h, width, gain=gain)
        if sprinkle:
            h = b.sprinkle(h)
        if i == clip_at and not clip_after_relu:
            h = b.clip(h, *_clip_limits(rng))
        else:
            h = b.relu(h)
            if i == clip_at:
                h = b.clip(h, None, float(rng.uniform(0.2, 1.0)))
        gain = 1.6
    out = b.dense(h, n_out, gain=1.5)
    if edge[1] < 0.15:
        out = b.relu(out) if rng.random() < 0.5 else b.clip(out, *_clip_limits(rng))
    return b.finish(out, f"dense_{n_in}_{'_'.join(map(str, hidden))}_{n_out}")


def conv_net(rng: np.random.Generator, asymmetric: bool = False) -> Network:
    """(b) Small convolutional network: Conv (stride, padding, dilation, groups variations) - ReLU
    (- Conv - ReLU) - Flatten/Reshape/Transpose - Gemm - ReLU - Gemm. Conv pads are symmetric unless
    ``asymmetric`` (onnx2torch turns asymmetric pads into a separate padding module)."""
    shape = (1, 4, 4) if rng.random() < 0.5 else (2, 5, 5)
    b = Builder("conv", shape, rng)
    cin, size = shape[0], shape[1]
    group = 2 if cin == 2 and rng.random() < 0.4 else 1
    cout = int(rng.choice([2, 4])) if group == 2 else int(rng.integers(2, 4))
    kernel = int(rng.choice([2, 3]))
    stride = int(rng.choice([1, 2]))
    ph, pw = (int(p) for p in rng.integers(0, 2, 2))  # asymmetric Conv pads: see conv_net(asymmetric=True)
    pads = (ph, pw, ph, pw) if not asymmetric else tuple(int(p) for p in rng.integers(0, 2, 4))
    dilation = 1
    if rng.random() < 0.25 and size + min(pads[0] + pads[2], pads[1] + pads[3]) >= 2 * (kernel - 1) + 1:
        dilation = 2
    h = b.conv(INPUT, cout, kernel, stride, pads, dilation, group, bias=bool(rng.random() < 0.8))
    h = b.relu(h)
    if rng.random() < 0.4:
        k2 = int(rng.choice([1, 2])) if min(b.shapes[h][1:]) >= 2 else 1
        h = b.conv(h, int(rng.integers(2, 4)), k2, 1, (0, 0, 0, 0), 1, 1)
        h = b.relu(h)
    if rng.random() < 0.3:
        c = b.shapes[h][0]
        k = (rng.uniform(0.5, 1.5, (c, 1, 1)) * rng.choice([-1, 1], (c, 1, 1))).astype(F32)
        h = b.affine("Mul", [h, b.const(k)], [h], lambda v: v * _f64(k))
    if rng.random() < 0.15 and b.shapes[h][1] * b.shapes[h][2] <= 8:  # the output is a feature map
        out = b.conv(h, 2, 1, 1, (0, 0, 0, 0), 1, 1)
        return b.finish(out, f"conv_map_{'x'.join(map(str, shape))}_k{kernel}s{stride}d{dilation}g{group}")
    how = rng.choice(["flatten", "reshape", "transpose"])
    if how == "flatten":
        h = b.flatten(h)
    elif how == "reshape":
        h = b.reshape_flat(h)
    else:
        h = b.flatten(b.transpose(h, [0, 2, 3, 1]))
    h = b.relu(b.dense(h, int(rng.integers(4, 9)), gain=1.3))
    out = b.dense(h, int(rng.integers(2, 5)), gain=1.5)
    return b.finish(out, f"conv_{'x'.join(map(str, shape))}_k{kernel}s{stride}d{dilation}g{group}")


def conv_chain_net(rng: np.random.Generator) -> Network:
    """A deeper chain of convolutions (strides, symmetric and asymmetric pads, dilation, groups, batch norm)
    and ReLU/Clip on 8x8 to 12x12 images, ending in Flatten - Gemm: the shape whose units the engine
    bounds through patches (:mod:`onnxdual.engine.patches`). Not one of :data:`FAMILIES` (their seeds stay)."""
    cin = int(rng.choice([1, 2, 3]))
    size = int(rng.integers(8, 13))
    b = Builder("conv_chain", (cin, size, size), rng)
    h = INPUT
    for depth in range(int(rng.integers(2, 5))):
        c, hgt, _ = b.shapes[h]
        kernel = int(rng.choice([1, 2, 3])) if hgt >= 4 else 1
        stride = int(rng.choice([1, 1, 2])) if hgt >= 6 else 1
        pads = tuple(int(p) for p in rng.integers(0, 2, 4)) if rng.random() < 0.3 else (kernel // 2,) * 4
        dilation = 2 if kernel > 1 and hgt >= 7 and rng.random() < 0.2 else 1
        group = c if c > 1 and rng.random() < 0.25 else 1
        cout = c * int(rng.integers(1, 3)) if group > 1 else int(rng.integers(2, 5))
        h = b.conv(h, cout, kernel, stride, pads, dilation, group, bias=bool(rng.random() < 0.8))
        if rng.random() < 0.3:
            h = b.batchnorm(h)
        h = b.relu(h) if rng.random() < 0.8 else b.clip(h, *_clip_limits(rng))
    # Gemm spellings only: ONNX MatMul constants stay float32 when a test turns the module to float64
    h = b.relu(b.dense(b.flatten(h), int(rng.integers(3, 7)), gain=1.3, style="gemm_t"))
    out = b.dense(h, int(rng.integers(2, 4)), gain=1.5, style="gemm")
    return b.finish(out, f"conv_chain_{cin}x{size}")


def residual_net(rng: np.random.Generator) -> Network:
    """(c) Residual network: Gemm-ReLU-Gemm blocks with skip Add/Sub of two branches; the first hidden
    value feeds several later nodes, and the output adds two branches (Gemm and MatMul)."""
    n_in = int(rng.integers(2, 6))
    w = int(rng.integers(3, 8))
    b = Builder("residual", (n_in,), rng)
    h1 = b.relu(b.dense(INPUT, w, gain=1.3))
    z = b.dense(h1, w, gain=1.4)
    s = b.add2(h1, z) if rng.random() < 0.5 else b.add2(z, h1, str(rng.choice(["Add", "Sub"])))
    h2 = b.relu(s)
    if rng.random() < 0.5:  # a second block whose skip comes from the input through its own Gemm
        p = b.dense(INPUT, w, gain=1.0)
        h3 = b.relu(b.add2(b.dense(h2, w, gain=1.4), p, str(rng.choice(["Add", "Sub"]))))
    else:  # a block whose skip subtracts two earlier values (h1 used a third time)
        d = b.add2(h2, h1, "Sub")
        h3 = b.relu(b.add2(b.dense(h2, w, gain=1.4), d))
    if rng.random() < 0.2:  # one value as both operands
        h3 = b.add2(h3, h3)
    if rng.random() < 0.4:  # broadcast add of a one-unit branch
        one = b.dense(h1, 1, gain=1.0, style="gemm_t")
        h3 = b.relu(b.add2(h3, one) if rng.random() < 0.5 else b.add2(one, h3))
    n_out = int(rng.integers(2, 5))
    out = b.add2(b.dense(h3, n_out, gain=1.4, style="gemm_t"),
                 b.dense(h1, n_out, gain=0.8, style="matmul_add"))
    return b.finish(out, f"residual_{n_in}_{w}")


def bn_pool_net(rng: np.random.Generator) -> Network:
    """(d) Pad (constant) - Conv - BatchNormalization - ReLU - AveragePool - Flatten - Gemm - ReLU - Gemm,
    sometimes with a BatchNormalization on the input and a GlobalAveragePool side branch."""
    shape = (1, 4, 4) if rng.random() < 0.5 else (2, 5, 5)
    b = Builder("bn_pool", shape, rng)
    h = INPUT
    if rng.random() < 0.4:
        h = b.batchnorm(h)
    h = b.pad(h, [int(p) for p in rng.integers(0, 2, 4)], float(rng.choice([0.0, rng.uniform(-0.5, 0.5)])))
    h = b.conv(h, int(rng.integers(2, 4)), int(rng.choice([2, 3])), 1, (0, 0, 0, 0), 1, 1)
    h = b.relu(b.batchnorm(h))
    if rng.random() < 0.3:
        ph, pw = (int(p) for p in rng.integers(0, 2, 2))  # onnx2torch pads AveragePool symmetrically only
        pads = (ph, pw, ph, pw)
        h = b.avgpool(h, 2, int(rng.choice([1, 2])), pads, int(rng.integers(0, 2)))
    else:
        h = b.avgpool(h, 2, int(rng.choice([1, 2])))
    flat = b.flatten(h)
    if rng.random() < 0.3:
        g = b.flatten(b.global_avgpool(h))
        hidden = b.relu(b.add2(b.dense(flat, 4, gain=1.3), b.dense(g, 4, gain=1.0)))
    else:
        hidden = b.relu(b.dense(flat, int(rng.integers(4, 8)), gain=1.3))
    out = b.dense(hidden, int(rng.integers(2, 4)), gain=1.5)
    return b.finish(out, f"bn_pool_{'x'.join(map(str, shape))}")


def structured_net(rng: np.random.Generator) -> Network:
    """(e) Per-example tensors of rank 2: MatMul with the constant on either side, broadcasting Add/Sub/Mul
    (also a constant that broadcasts a value *up*), Transpose of the per-example axes, Flatten; or a 1-D
    convolution (Conv on (C, L) inputs)."""
    if rng.random() < 0.6:
        rows, cols = int(rng.integers(2, 4)), int(rng.integers(2, 4))
        b = Builder("structured", (rows, cols), rng)
        m = int(rng.integers(2, 4))
        if rng.random() < 0.5:
            w = b.weights((cols, m), cols, 1.3)
            h = b.affine("MatMul", [INPUT, b.const(w)], [INPUT], lambda v: v @ _f64(w))
        else:
            w = b.weights((m, rows), rows, 1.3)
            h = b.affine("MatMul", [b.const(w), INPUT], [INPUT], lambda v: _f64(w) @ v)
        r, k = b.shapes[h]
        bias = (rng.standard_normal((r, 1) if rng.random() < 0.5 else (k,)) * 0.4).astype(F32)
        h = b.relu(b.affine("Add", [h, b.const(bias)], [h], lambda v: v + _f64(bias)))
        if rng.random() < 0.5:
            h = b.transpose(h, [0, 2, 1])
        flat = b.flatten(h)
        width = int(rng.integers(3, 7))
        z = b.dense(flat, width, gain=1.3)
        one = b.dense(flat, 1, gain=1.0, style="gemm_t")  # (1,) broadcast up by a (width,) constant
        up = (rng.standard_normal(width) * 0.5).astype(F32)
        if rng.random() < 0.5:
            one = b.affine("Mul", [one, b.const(up)], [one], lambda v: v * _f64(up))
        else:
            one = b.affine("Add", [b.const(up), one], [one], lambda v: _f64(up) + v)
        h = b.relu(b.add2(z, one, str(rng.choice(["Add", "Sub"]))))
        out = b.dense(h, int(rng.integers(2, 4)), gain=1.5)
        return b.finish(out, f"structured_{rows}x{cols}")
    length = int(rng.integers(5, 8))
    b = Builder("structured", (2, length), rng)
    kernel, stride, pad = int(rng.choice([2, 3])), int(rng.choice([1, 2])), int(rng.integers(0, 2))
    cout = int(rng.integers(2, 4))
    w = b.weights((cout, 2, kernel), 2 * kernel, 1.3)
    bias = (rng.standard_normal(cout) * 0.4).astype(F32)

    def conv1d(v):
        out = np_conv(v[:, :, None, :], _f64(w)[:, :, None, :], _f64(bias), (1, stride), (0, pad, 0, pad),
                      (1, 1), 1)
        return out[:, :, 0, :]

    h = b.affine("Conv", [INPUT, b.const(w), b.const(bias)], [INPUT], conv1d, kernel_shape=[kernel],
                 strides=[stride], pads=[pad, pad])
    h = b.relu(h)
    h = b.relu(b.dense(b.flatten(h), int(rng.integers(3, 7)), gain=1.3))
    out = b.dense(h, int(rng.integers(2, 4)), gain=1.5)
    return b.finish(out, f"structured_conv1d_{length}_k{kernel}s{stride}p{pad}")


FAMILIES: dict[str, Callable[[np.random.Generator], Network]] = {
    "dense": lambda rng: dense_net(rng, normalise=False, clip=False),
    "dense_norm_clip": lambda rng: dense_net(rng, normalise=True, clip=True),
    "dense_any": dense_net,
    "conv": conv_net,
    "residual": residual_net,
    "bn_pool": bn_pool_net,
    "structured": structured_net,
}


def random_network(seed: int, family: str | None = None) -> Network:
    """A reproducible random network; the family cycles with the seed unless given."""
    names = list(FAMILIES)
    family = names[seed % len(names)] if family is None else family
    return FAMILIES[family](np.random.default_rng([seed, 7919]))
