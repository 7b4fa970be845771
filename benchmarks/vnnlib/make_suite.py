"""Generate the CI regression suite of ``onnxdual bench``: tiny ONNX networks, VNN-LIB properties (1.0 and
2.0, disjunctions, several input boxes, gzip files) and their ground truth.

    python benchmarks/vnnlib/make_suite.py        # rewrites onnx/, vnnlib/, instances.csv, expected.csv

Everything is deterministic (fixed seeds). The ground truth does not come from onnxdual: every answer is
decided by an exact mixed-integer program of the ReLU network (scipy's HiGHS, big-M encoding from interval
bounds) in real arithmetic, and each property's threshold is placed ``DELTA`` away from the exact optimum, so
float32 evaluation cannot change the answer. ``sat`` answers are also checked with onnxruntime at the MILP's
optimal input. Run ``onnxdual bench benchmarks/vnnlib --expected ... --out ...`` afterwards and refresh
``baseline.csv`` from the new ``results.csv`` when the suite changes on purpose.
"""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from scipy.optimize import Bounds, LinearConstraint, milp

HERE = Path(__file__).resolve().parent
DELTA = 0.05  # distance of every threshold from the exact optimum (relative to the output scale)


# ------------------------------------------------------------------------------------------------ networks
# A network is a list of nodes over named values: ("affine", out, [(in, W)], b), ("relu", out, in);
# the first value is "x" (flat input), the last node's output is the flat output.


def dense(rng, n_out, n_in, scale=1.0):
    return (rng.normal(size=(n_out, n_in)) * scale / math.sqrt(n_in)).astype(np.float32)


def make_mlp2(rng):
    w1, b1 = dense(rng, 8, 2, 2.0), rng.normal(size=8).astype(np.float32) * 0.5
    w2, b2 = dense(rng, 8, 8, 2.0), rng.normal(size=8).astype(np.float32) * 0.5
    w3, b3 = dense(rng, 2, 8, 2.0), rng.normal(size=2).astype(np.float32) * 0.5
    spec = [("affine", "h1", [("x", w1)], b1), ("relu", "r1", "h1"), ("affine", "h2", [("r1", w2)], b2),
            ("relu", "r2", "h2"), ("affine", "y", [("r2", w3)], b3)]
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h1"], transB=1),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Gemm", ["r1", "W2", "B2"], ["h2"], transB=1),
             helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("Gemm", ["r2", "W3", "B3"], ["y"], transB=1)]
    inits = {"W1": w1, "B1": b1, "W2": w2, "B2": b2, "W3": w3, "B3": b3}
    return spec, model(nodes, inits, [1, 2], [1, 2], opset=13)


def make_acas_like(rng):
    """5 inputs in an NCHW-like [1, 1, 1, 5] tensor, normalisation (Sub, Div) in the graph, MatMul + Add."""
    mean = np.array([0.1, -0.2, 0.0, 0.3, 0.05], np.float32)
    std = np.array([0.5, 1.0, 0.8, 0.4, 2.0], np.float32)
    ws = [dense(rng, 16, 5, 1.5), dense(rng, 16, 16, 1.5), dense(rng, 5, 16, 1.0)]
    bs = [rng.normal(size=16).astype(np.float32) * 0.3, rng.normal(size=16).astype(np.float32) * 0.3,
          rng.normal(size=5).astype(np.float32) * 0.1]
    # (x - mean) / std folded into the first affine layer for the MILP
    w0 = (ws[0] / std[None, :]).astype(np.float64)
    b0 = bs[0].astype(np.float64) - w0 @ mean.astype(np.float64)
    spec = [("affine", "h1", [("x", w0)], b0), ("relu", "r1", "h1"), ("affine", "h2", [("r1", ws[1])], bs[1]),
            ("relu", "r2", "h2"), ("affine", "y", [("r2", ws[2])], bs[2])]
    nodes = [helper.make_node("Sub", ["x", "MEAN"], ["c"]), helper.make_node("Div", ["c", "STD"], ["n"]),
             helper.make_node("Flatten", ["n"], ["f"])]
    inits = {"MEAN": mean.reshape(1, 1, 1, 5), "STD": std.reshape(1, 1, 1, 5)}
    prev = "f"
    for i, (w, b) in enumerate(zip(ws, bs)):
        inits[f"W{i}"], inits[f"B{i}"] = np.ascontiguousarray(w.T), b
        nodes += [helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"B{i}"], [f"a{i}" if i < 2 else "y"])]
        if i < 2:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"]))
            prev = f"r{i}"
    return spec, model(nodes, inits, [1, 1, 1, 5], [1, 5], opset=13)


def conv_matrix(kernel, bias, size):
    """Dense matrix of a 'same' 3x3 convolution (stride 1, padding 1) on ``size x size`` images."""
    c_out, c_in, kh, kw = kernel.shape
    n = size * size
    w = np.zeros((c_out * n, c_in * n), np.float64)
    for o in range(c_out):
        for i in range(size):
            for j in range(size):
                for c in range(c_in):
                    for di in range(kh):
                        for dj in range(kw):
                            ii, jj = i + di - 1, j + dj - 1
                            if 0 <= ii < size and 0 <= jj < size:
                                w[o * n + i * size + j, c * n + ii * size + jj] = kernel[o, c, di, dj]
    return w, np.repeat(bias.astype(np.float64), n)


def make_conv(rng):
    kernel = (rng.normal(size=(2, 1, 3, 3)) / 3).astype(np.float32)
    kbias = (rng.normal(size=2) * 0.1).astype(np.float32)
    w2, b2 = dense(rng, 3, 32, 1.5), rng.normal(size=3).astype(np.float32) * 0.1
    wc, bc = conv_matrix(kernel, kbias, 4)
    spec = [("affine", "h1", [("x", wc)], bc), ("relu", "r1", "h1"), ("affine", "y", [("r1", w2)], b2)]
    nodes = [helper.make_node("Conv", ["x", "K", "KB"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "W2", "B2"], ["y"], transB=1)]
    return spec, model(nodes, {"K": kernel, "KB": kbias, "W2": w2, "B2": b2}, [1, 1, 4, 4], [1, 3], opset=13)


def make_skip(rng):
    """A residual block: y = W3 relu(W2 relu(W1 x + b1) + b2 + x) + b3."""
    w1, b1 = dense(rng, 6, 3, 2.0), rng.normal(size=6).astype(np.float32) * 0.3
    w2, b2 = dense(rng, 3, 6, 2.0), rng.normal(size=3).astype(np.float32) * 0.3
    w3, b3 = dense(rng, 2, 3, 2.0), rng.normal(size=2).astype(np.float32) * 0.3
    spec = [("affine", "h1", [("x", w1)], b1), ("relu", "r1", "h1"),
            ("affine", "h2", [("r1", w2), ("x", np.eye(3))], b2), ("relu", "r2", "h2"),
            ("affine", "y", [("r2", w3)], b3)]
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h1"], transB=1),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Gemm", ["r1", "W2", "B2"], ["g"], transB=1),
             helper.make_node("Add", ["g", "x"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("Gemm", ["r2", "W3", "B3"], ["y"], transB=1)]
    inits = {"W1": w1, "B1": b1, "W2": w2, "B2": b2, "W3": w3, "B3": b3}
    return spec, model(nodes, inits, [1, 3], [1, 2], opset=13)


def model(nodes, inits, in_shape, out_shape, opset):
    graph = helper.make_graph(nodes, "onnxdual_suite",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k)
                               for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="make_suite.py")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


# ---------------------------------------------------------------------------------------------------- MILP


def interval_bounds(spec, lower, upper):
    vals = {"x": (lower.astype(np.float64), upper.astype(np.float64))}
    for node in spec:
        if node[0] == "affine":
            _, out, terms, b = node
            lo = np.asarray(b, np.float64).copy()
            hi = lo.copy()
            for name, w in terms:
                w = np.asarray(w, np.float64)
                l, u = vals[name]
                lo += np.clip(w, 0, None) @ l + np.clip(w, None, 0) @ u
                hi += np.clip(w, 0, None) @ u + np.clip(w, None, 0) @ l
            vals[out] = (lo, hi)
        else:
            _, out, inp = node
            l, u = vals[inp]
            vals[out] = (np.maximum(l, 0), np.maximum(u, 0))
    return vals


def milp_max_margin(spec, lower, upper, a, b):
    """``max over x in [lower, upper] of min_i (b_i - a_i . y(x))``: > 0 means the conjunction ``a y <= b``
    is reachable with slack, < 0 unreachable. Returns (value, x)."""
    bounds = interval_bounds(spec, lower, upper)
    index, lo_v, hi_v, integrality = {}, [], [], []

    def add(name, lo, hi, integer=False):
        index[name] = len(lo_v)
        lo_v.extend(lo)
        hi_v.extend(hi)
        integrality.extend([1 if integer else 0] * len(lo))

    add("x", lower, upper)
    rows, lbs, ubs = [], [], []

    def constraint(coeffs, lb, ub):
        rows.append(coeffs)
        lbs.append(lb)
        ubs.append(ub)

    for node in spec:
        if node[0] == "affine":
            _, out, terms, bias = node
            lo, hi = bounds[out]
            add(out, lo - 1e-6, hi + 1e-6)
            for k in range(len(lo)):  # out_k - sum W x = b
                coeffs = {index[out] + k: 1.0}
                for name, w in terms:
                    for j, v in enumerate(np.asarray(w, np.float64)[k]):
                        if v:
                            coeffs[index[name] + j] = coeffs.get(index[name] + j, 0.0) - float(v)
                constraint(coeffs, float(bias[k]), float(bias[k]))
        else:
            _, out, inp = node
            lo, hi = bounds[inp]
            add(out, np.maximum(lo, 0), np.maximum(hi, 0) + 1e-6)
            add(out + ":d", np.zeros(len(lo)), np.ones(len(lo)), integer=True)
            for k in range(len(lo)):
                o, i, d = index[out] + k, index[inp] + k, index[out + ":d"] + k
                constraint({o: 1.0, i: -1.0}, 0.0, np.inf)  # r >= z
                if hi[k] <= 0:
                    constraint({o: 1.0}, 0.0, 0.0)
                    continue
                if lo[k] >= 0:
                    constraint({o: 1.0, i: -1.0}, 0.0, 0.0)
                    continue
                constraint({o: 1.0, i: -1.0, d: -lo[k]}, -np.inf, -lo[k])  # r <= z - l (1 - d)
                constraint({o: 1.0, d: -hi[k]}, -np.inf, 0.0)  # r <= u d
    add("s", [-1e4], [1e4])
    y = index[spec[-1][1]]
    for i in range(a.shape[0]):  # s <= b_i - a_i y
        coeffs = {index["s"]: 1.0}
        for j, v in enumerate(a[i]):
            if v:
                coeffs[y + j] = float(v)
        constraint(coeffs, -np.inf, float(b[i]))
    n = len(lo_v)
    mat = np.zeros((len(rows), n))
    for r, coeffs in enumerate(rows):
        for j, v in coeffs.items():
            mat[r, j] = v
    c = np.zeros(n)
    c[index["s"]] = -1.0
    res = milp(c, constraints=LinearConstraint(mat, lbs, ubs), bounds=Bounds(lo_v, hi_v),
               integrality=np.array(integrality), options={"mip_rel_gap": 1e-9})
    assert res.status == 0, res.message
    return -res.fun, res.x[index["x"]: index["x"] + len(lower)]


def forward(spec, x):
    vals = {"x": np.asarray(x, np.float64)}
    for node in spec:
        if node[0] == "affine":
            _, out, terms, b = node
            vals[out] = np.asarray(b, np.float64) + sum(np.asarray(w, np.float64) @ vals[n] for n, w in terms)
        else:
            vals[node[1]] = np.maximum(vals[node[2]], 0)
    return vals[spec[-1][1]]


# --------------------------------------------------------------------------------------------- properties


def fmt(v: float) -> str:
    return f"{v:.6f}"


class Prop:
    """Cases: list of (lower, upper, [conjunction (a, b), ...]); the unsafe region ``a y <= b``."""

    def __init__(self, name, cases, version="1.0", elem="Real"):
        self.name, self.cases, self.version, self.elem = name, cases, version, elem

    def text(self, n_in, n_out, in_shape=None, out_shape=None):
        return self.text1(n_in, n_out) if self.version == "1.0" else self.text2(in_shape, out_shape)

    @staticmethod
    def _atoms(a, b, yname):
        out = []
        for row, rhs in zip(a, b):
            terms = [(c, yname(j)) for j, c in enumerate(row) if c]
            if len(terms) == 2 and sorted(c for c, _ in terms) == [-1.0, 1.0] and rhs == 0:
                (c1, v1), (_, v2) = terms
                pos, neg = (v1, v2) if c1 > 0 else (v2, v1)
                out.append(f"(<= {pos} {neg})")
            elif len(terms) == 1 and abs(terms[0][0]) == 1:
                c, v = terms[0]
                out.append(f"(<= {v} {fmt(rhs)})" if c > 0 else f"(>= {v} {fmt(-rhs)})")
            else:
                s = " ".join(f"(* {fmt(c)} {v})" for c, v in terms)
                out.append(f"(<= (+ {s}) {fmt(rhs)})")
        return out

    def text1(self, n_in, n_out):
        lines = [f"; {self.name}: generated by make_suite.py"]
        lines += [f"(declare-const X_{i} Real)" for i in range(n_in)]
        lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
        y = lambda j: f"Y_{j}"
        if len(self.cases) == 1:
            lo, hi, conj = self.cases[0]
            for i in range(n_in):
                lines += [f"(assert (>= X_{i} {fmt(lo[i])}))", f"(assert (<= X_{i} {fmt(hi[i])}))"]
            clauses = ["(and " + " ".join(self._atoms(a, b, y)) + ")" for a, b in conj]
            lines.append("(assert (or\n    " + "\n    ".join(clauses) + "\n))" if len(clauses) > 1
                         else f"(assert {clauses[0]})")
        else:  # one big disjunction of (box and output clause), as some VNN-COMP benchmarks write it
            clauses = []
            for lo, hi, conj in self.cases:
                box = " ".join(f"(>= X_{i} {fmt(lo[i])}) (<= X_{i} {fmt(hi[i])})" for i in range(n_in))
                for a, b in conj:
                    clauses.append(f"(and {box} " + " ".join(self._atoms(a, b, y)) + ")")
            lines.append("(assert (or\n    " + "\n    ".join(clauses) + "\n))")
        return "\n".join(lines) + "\n"

    def text2(self, in_shape, out_shape):
        def idx(flat, shape):
            out = []
            for d in reversed(shape):
                out.append(flat % d)
                flat //= d
            return ",".join(str(i) for i in reversed(out))

        lines = [f"; {self.name}: generated by make_suite.py", "(vnnlib-version <2.0>)",
                 "(declare-network net",
                 f"    (declare-input X {self.elem} [{','.join(map(str, in_shape))}])",
                 f"    (declare-output Y {self.elem} [{','.join(map(str, out_shape))}])", ")"]
        n_in = int(np.prod(in_shape))
        y = lambda j: f"Y[{idx(j, out_shape)}]"
        lo, hi, conj = self.cases[0]
        assert len(self.cases) == 1
        for i in range(n_in):
            lines += [f"(assert (>= X[{idx(i, in_shape)}] {fmt(lo[i])}))",
                      f"(assert (<= X[{idx(i, in_shape)}] {fmt(hi[i])}))"]
        clauses = ["(and " + " ".join(self._atoms(a, b, y)) + ")" for a, b in conj]
        lines.append("(assert (or " + " ".join(clauses) + "))" if len(clauses) > 1
                     else f"(assert {clauses[0]})")
        return "\n".join(lines) + "\n"


def decide(spec, prop):
    """Exact answer: sat iff some case's conjunction has a positive MILP margin. Also returns the margin."""
    best, where = -np.inf, None
    for lo, hi, conj in prop.cases:
        for a, b in conj:
            v, x = milp_max_margin(spec, np.asarray(lo, np.float64), np.asarray(hi, np.float64),
                                   np.asarray(a, np.float64), np.asarray(b, np.float64))
            if v > best:
                best, where = v, (x, a, b, lo, hi)
    return best, where


def place(spec, make, target):
    """``make(t)`` builds a property whose exact margin decreases with ``t``; find ``t`` where the margin is
    ``target`` (+DELTA: sat, -DELTA: unsat) by bracketing and bisection on the MILP."""
    def margin(t):
        return decide(spec, make(t))

    t = 0.0
    v, _ = margin(t)
    lo_t, hi_t = (t, t + 1.0) if v > target else (t - 1.0, t)
    while margin(hi_t)[0] > target:
        hi_t += 2 * (hi_t - lo_t)
    while margin(lo_t)[0] < target:
        lo_t -= 2 * (hi_t - lo_t)
    for _ in range(60):
        mid = (lo_t + hi_t) / 2
        v, where = margin(mid)
        if abs(v - target) < 1e-4:
            return make(mid), v, where
        lo_t, hi_t = (mid, hi_t) if v > target else (lo_t, mid)
    raise AssertionError("bisection did not converge")


def main():
    rng = np.random.default_rng(2024)
    (HERE / "onnx").mkdir(exist_ok=True)
    (HERE / "vnnlib").mkdir(exist_ok=True)
    nets = {"mlp2": make_mlp2(rng), "acas_like": make_acas_like(rng), "conv": make_conv(rng),
            "skip": make_skip(rng)}
    shapes = {"mlp2": ([1, 2], [1, 2]), "acas_like": ([1, 1, 1, 5], [1, 5]), "conv": ([1, 1, 4, 4], [1, 3]),
              "skip": ([1, 3], [1, 2])}
    for name, (_, m) in nets.items():
        onnx.save(m, str(HERE / "onnx" / f"{name}.onnx"))
    skip = (HERE / "onnx" / "skip.onnx").read_bytes()
    (HERE / "onnx" / "skip.onnx.gz").write_bytes(gzip.compress(skip, mtime=0))

    e = np.eye
    props = []  # (net, Prop, expected, margin)

    def add(net, make, sat):
        spec = nets[net][0]
        prop, v, where = place(spec, make, DELTA if sat else -DELTA)
        props.append((net, prop, "sat" if sat else "unsat", v, where))

    box2 = ([-1.0, -1.0], [1.0, 1.0])
    # mlp2: a single row (1.0), a disjunction of conjunctions (2.0)
    for sat in (False, True):
        add("mlp2", lambda t, s=sat: Prop(f"mlp2_y0_{'sat' if s else 'unsat'}",
                                           [(*box2, [(-e(2)[[0]], -np.array([t]))])]), sat)
        add("mlp2", lambda t, s=sat: Prop(
            f"mlp2_or_{'sat' if s else 'unsat'}",
            [(*box2, [(np.array([[1.0, -1.0], [-1.0, 0.0]]), np.array([0.0, -t])),
                      (np.array([[0.0, 1.0]]), np.array([-t - 1.0]))])], version="2.0"), sat)
    # acas_like: "output 0 is the minimum" (a 4-row conjunction), and two input boxes in one file
    lo5, hi5 = [-0.6, -1.0, -0.8, -0.4, -1.5], [0.6, 1.0, 0.8, 0.9, 1.5]
    rows = np.array([[1.0, -1, 0, 0, 0], [1, 0, -1, 0, 0], [1, 0, 0, -1, 0], [1, 0, 0, 0, -1]])
    for sat in (False, True):
        add("acas_like", lambda t, s=sat: Prop(f"acas_like_min0_{'sat' if s else 'unsat'}",
                                                [(lo5, hi5, [(rows, np.full(4, -t))])]), sat)
        add("acas_like", lambda t, s=sat: Prop(
            f"acas_like_two_boxes_{'sat' if s else 'unsat'}",
            [([-0.6, -1.0, -0.8, -0.4, -1.5], [0.0, 1.0, 0.8, 0.9, 1.5], [(-e(5)[[2]], -np.array([t]))]),
             ([0.0, -1.0, -0.8, -0.4, -1.5], [0.6, 1.0, 0.8, 0.9, 1.5],
             [(-e(5)[[2]], -np.array([t]))])]), sat)
    # conv: robustness of the label at an image (16 perturbed pixels), 1.0 and 2.0
    image = rng.uniform(0, 1, size=16)
    label = int(np.argmax(forward(nets["conv"][0], image)))
    others = [j for j in range(3) if j != label]
    for sat, version in ((False, "1.0"), (True, "2.0")):
        eps = 0.1 if not sat else 0.4

        def make_conv_prop(t, s=sat, v=version, eps=eps):
            conj = []
            for j in others:  # unsafe: Y_j >= Y_label + t
                row = np.zeros(3)
                row[label], row[j] = 1.0, -1.0
                conj.append((row[None, :], np.array([-t])))
            return Prop(f"conv_robust_{'sat' if s else 'unsat'}", [(image - eps, image + eps, conj)],
                        version=v, elem="float32")

        add("conv", make_conv_prop, sat)
    # skip: a general linear output constraint, 2.0
    for sat in (False, True):
        add("skip", lambda t, s=sat: Prop(f"skip_lin_{'sat' if s else 'unsat'}",
                                          [([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0],
                                            [(np.array([[-0.5, -1.0]]), np.array([-t]))])], version="2.0",
                                          elem="float32"), sat)

    instances, expected = [], []
    for net, prop, answer, margin, where in props:
        in_shape, out_shape = shapes[net]
        text = prop.text(int(np.prod(in_shape)), int(np.prod(out_shape)), in_shape, out_shape)
        vnn = f"vnnlib/{prop.name}.vnnlib"
        onnx_file = f"onnx/{net}.onnx"
        if prop.name == "skip_lin_sat":
            vnn += ".gz"
            (HERE / vnn).write_bytes(gzip.compress(text.encode(), mtime=0))
            onnx_file += ".gz"
        else:
            (HERE / vnn).write_text(text)
        if answer == "sat":  # the MILP optimum is a counterexample for onnxruntime too
            x, a, b, lo, _ = where
            sess = ort.InferenceSession(str(HERE / "onnx" / f"{net}.onnx"),
                                        providers=["CPUExecutionProvider"])
            y = sess.run(None, {"x": x.astype(np.float32).reshape(in_shape)})[0]
            y = y.reshape(-1).astype(np.float64)
            assert np.all(a @ y <= b + 1e-9) and np.all(np.asarray(lo) <= x + 1e-9), (prop.name, a @ y - b)
        instances.append((onnx_file, vnn, 10))
        expected.append({"onnx": onnx_file, "vnnlib": vnn, "expected": answer, "milp_margin": f"{margin:.6f}",
                         "vnnlib_version": prop.version})
        print(f"{prop.name:28s} {answer:5s} margin {margin:+.4f}")
    with open(HERE / "instances.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(instances)
    with open(HERE / "expected.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(expected[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(expected)


if __name__ == "__main__":
    main()
