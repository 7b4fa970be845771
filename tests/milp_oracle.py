"""An exact oracle for soundness tests: the minimum of ``c . f(x)`` over a box for a ReLU network, by a
mixed-integer program (scipy's HiGHS ``milp``), on networks built here as ONNX with the same weights.

A network is a list of dense layers; layer i computes ``z_i = W_i h_{i-1} + b_i (+ h_{i-2} if skip)`` and
``h_i = relu(z_i)``; the output is ``W_out h_L + b_out``. Convolutions enter as their dense matrices. The
big-M constants come from interval arithmetic, which is sound, so the MILP is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper
from scipy.optimize import Bounds, LinearConstraint, milp

from tests.onnx_builders import make_model


@dataclass
class DenseNet:
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    skips: list[bool]  # per hidden layer: add h_{i-2} (same width) before the ReLU
    out_w: np.ndarray
    out_b: np.ndarray
    input_shape: tuple[int, ...] = field(default=())
    onnx_model: onnx.ModelProto | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        hs = [x.reshape(x.shape[0], -1)]
        for w, b, skip in zip(self.weights, self.biases, self.skips):
            z = hs[-1] @ w.T + b
            if skip:
                z = z + hs[-2]
            hs.append(np.maximum(z, 0))
        return hs[-1] @ self.out_w.T + self.out_b


def random_dense(rng: np.random.Generator, n_in: int, widths: list[int], n_out: int, skip: bool = False,
                 scale: float = 1.5) -> DenseNet:
    weights, biases, skips, d = [], [], [], n_in
    for i, w in enumerate(widths):
        weights.append((rng.normal(size=(w, d)) * scale / np.sqrt(d)).astype(np.float32))
        biases.append((rng.normal(size=w) * 0.3).astype(np.float32))
        skips.append(bool(skip and i >= 1 and widths[i - 1] == w and (i < 2 or widths[i - 2] == w or i == 1)
                          and (i >= 2 or n_in == w)))
        d = w
    net = DenseNet(weights, biases, skips, (rng.normal(size=(n_out, d)) / np.sqrt(d)).astype(np.float32),
                   (rng.normal(size=n_out) * 0.1).astype(np.float32), (n_in,))
    net.onnx_model = _to_onnx(net)
    return net


def _to_onnx(net: DenseNet, prefix_nodes=(), first: str = "input", inits=None) -> onnx.ModelProto:
    nodes, inits = list(prefix_nodes), dict(inits or {})
    names = [first]
    for i, (w, b, skip) in enumerate(zip(net.weights, net.biases, net.skips)):
        inits[f"W{i}"], inits[f"B{i}"] = w, b
        nodes.append(helper.make_node("Gemm", [names[-1], f"W{i}", f"B{i}"], [f"z{i}"], transB=1))
        pre = f"z{i}"
        if skip:
            nodes.append(helper.make_node("Add", [pre, names[-2]], [f"s{i}"]))
            pre = f"s{i}"
        nodes.append(helper.make_node("Relu", [pre], [f"h{i}"]))
        names.append(f"h{i}")
    inits["Wout"], inits["Bout"] = net.out_w, net.out_b
    nodes.append(helper.make_node("Gemm", [names[-1], "Wout", "Bout"], ["output"], transB=1))
    return make_model(nodes, list(net.input_shape), [net.out_w.shape[0]], inits)


def conv_as_dense(rng: np.random.Generator, channels: int = 1, size: int = 5, filters: int = 2, hidden: int = 6,
                  n_out: int = 3, stride: int = 1) -> DenseNet:
    """A conv -> relu -> flatten -> gemm -> relu -> gemm net: ONNX with a real Conv node, and the same
    convolution as a dense matrix for the MILP."""
    import torch
    import torch.nn.functional as F

    k = (rng.normal(size=(filters, channels, 3, 3)) * 0.6).astype(np.float32)
    kb = (rng.normal(size=filters) * 0.2).astype(np.float32)
    n_in = channels * size * size
    eye = torch.eye(n_in).reshape(n_in, channels, size, size)
    dense = F.conv2d(eye, torch.from_numpy(k), None, stride=stride, padding=1).reshape(n_in, -1).T.numpy()
    out_hw = (size + 2 - 3) // stride + 1
    bias = np.repeat(kb, out_hw * out_hw)
    d = dense.shape[0]
    w2 = (rng.normal(size=(hidden, d)) * 1.5 / np.sqrt(d)).astype(np.float32)
    b2 = (rng.normal(size=hidden) * 0.3).astype(np.float32)
    wo = (rng.normal(size=(n_out, hidden)) / np.sqrt(hidden)).astype(np.float32)
    bo = (rng.normal(size=n_out) * 0.1).astype(np.float32)
    net = DenseNet([dense.astype(np.float32), w2], [bias.astype(np.float32), b2], [False, False], wo, bo,
                   (channels, size, size))
    nodes = [helper.make_node("Conv", ["input", "K", "KB"], ["c"], pads=[1, 1, 1, 1], strides=[stride, stride]),
             helper.make_node("Relu", ["c"], ["h0"]), helper.make_node("Flatten", ["h0"], ["f"]),
             helper.make_node("Gemm", ["f", "W1", "B1"], ["z1"], transB=1), helper.make_node("Relu", ["z1"], ["h1"]),
             helper.make_node("Gemm", ["h1", "Wout", "Bout"], ["output"], transB=1)]
    net.onnx_model = make_model(nodes, [channels, size, size], [n_out],
                                {"K": k, "KB": kb, "W1": w2, "B1": b2, "Wout": wo, "Bout": bo})
    return net


def milp_minimum(net: DenseNet, c: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                 phases: dict[tuple[int, int], bool] | None = None) -> float:
    """Exact ``min c . f(x)`` over ``lower <= x <= upper`` (flat input). ``phases`` restricts the domain
    further: ``{(layer, unit): True}`` keeps the inputs where that ReLU's pre-activation is ``>= 0``,
    ``False`` where it is ``<= 0`` (a branch of branch and bound); ``+inf`` when nothing is left."""
    lower, upper = lower.reshape(-1).astype(np.float64), upper.reshape(-1).astype(np.float64)
    n_in = lower.size
    # variable layout: x, then per layer (z, h, delta)
    var_lo, var_hi, integrality = list(lower), list(upper), [0] * n_in
    rows, row_lo, row_hi = [], [], []
    h_idx = [list(range(n_in))]
    h_lo, h_hi = [lower], [upper]
    count = n_in

    def add_vars(lo, hi, integer):
        nonlocal count
        idx = list(range(count, count + len(lo)))
        var_lo.extend(lo)
        var_hi.extend(hi)
        integrality.extend([integer] * len(lo))
        count += len(lo)
        return idx

    pending = []
    for layer, (w, b, skip) in enumerate(zip(net.weights, net.biases, net.skips)):
        w, b = w.astype(np.float64), b.astype(np.float64)
        pos, neg = np.maximum(w, 0), np.minimum(w, 0)
        zl = pos @ h_lo[-1] + neg @ h_hi[-1] + b
        zu = pos @ h_hi[-1] + neg @ h_lo[-1] + b
        if skip:
            zl, zu = zl + h_lo[-2], zu + h_hi[-2]
        zl, zu = zl - 1e-6 * (1 + np.abs(zl)), zu + 1e-6 * (1 + np.abs(zu))
        z = add_vars(zl, zu, 0)
        for (at, unit), active in (phases or {}).items():
            if at == layer:
                if active:
                    var_lo[z[unit]] = max(var_lo[z[unit]], 0.0)
                else:
                    var_hi[z[unit]] = min(var_hi[z[unit]], 0.0)
        h = add_vars(np.zeros_like(zl), np.maximum(zu, 0), 0)
        dlt = add_vars(np.zeros_like(zl), np.ones_like(zl), 1)
        for j in range(len(b)):
            # z_j - W_j h_prev (- h_{i-2, j}) = b_j
            pending.append(({z[j]: 1.0, **{h_idx[-1][k]: -w[j, k] for k in range(w.shape[1])},
                             **({h_idx[-2][j]: -1.0} if skip else {})}, b[j], b[j]))
            pending.append(({h[j]: 1.0, z[j]: -1.0}, 0.0, np.inf))  # h >= z
            pending.append(({h[j]: 1.0, z[j]: -1.0, dlt[j]: -zl[j]}, -np.inf, -zl[j]))  # h <= z - l(1-d)
            pending.append(({h[j]: 1.0, dlt[j]: -max(zu[j], 0.0)}, -np.inf, 0.0))  # h <= u d
        h_idx.append(h)
        h_lo.append(np.maximum(zl, 0))
        h_hi.append(np.maximum(zu, 0))
    for coeffs, lo, hi in pending:
        row = np.zeros(count)
        for k, v in coeffs.items():
            row[k] += v
        rows.append(row)
        row_lo.append(lo)
        row_hi.append(hi)
    objective = np.zeros(count)
    out_c = c.astype(np.float64) @ net.out_w.astype(np.float64)
    for k, v in zip(h_idx[-1], out_c):
        objective[k] += v
    if any(lo > hi for lo, hi in zip(var_lo, var_hi)):
        return float("inf")  # a phase its interval bounds already exclude
    res = milp(objective, integrality=np.array(integrality), bounds=Bounds(var_lo, var_hi),
               constraints=[LinearConstraint(np.array(rows), row_lo, row_hi)] if rows else [],
               options={"mip_rel_gap": 1e-9, "presolve": True})
    if res.status == 2:  # infeasible: the phases leave no input
        return float("inf")
    assert res.success, res.message
    return float(res.fun + c.astype(np.float64) @ net.out_b.astype(np.float64))
