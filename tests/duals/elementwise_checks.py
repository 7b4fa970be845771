"""Shared checks of element-wise dual layers (the generic smooth helper and the ops built on it): random
input intervals from very narrow (1e-7) to very wide (1e3), a dense grid of each interval that includes its
ends and the function's breaks (inflection points, kinks), the check that a face lies on the right side of the
function at every grid point, the dual layer as built from a one-node ONNX model, and the soundness of a small
network's certified bounds against sampling and PGD."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from onnx import helper

import onnxdual
from onnxdual.duals.base import ElementwiseFace, Faces, ParametricFaces, RelaxationFace
from onnxdual.engine.build import build_dual
from tests.onnx_builders import make_model, run_ort
from tests.oracles.attacks import pgd_minimize


def intervals(rng: np.random.Generator, n: int, dtype: torch.dtype, domain=(-8.0, 8.0), points=()) -> tuple:
    """``(1, n)`` bounds ``l <= u`` inside ``domain``: widths log-uniform in [1e-7, 1e3] (clipped to the
    domain), a tenth exactly 1e-7 wide, a tenth starting and a tenth ending on one of ``points``."""
    lo, hi = domain
    width = 10 ** rng.uniform(-7, 3, size=n)
    width[: n // 10] = 1e-7
    centre = rng.uniform(max(lo, -20.0), min(hi, 20.0), size=n)
    lower = centre - width * rng.uniform(0, 1, size=n)
    if points:
        pick = rng.choice(np.asarray(points, dtype=np.float64), size=n)
        lower[n // 10: n // 5] = pick[n // 10: n // 5]
        lower[n // 5: 3 * n // 10] = pick[n // 5: 3 * n // 10] - width[n // 5: 3 * n // 10]
    lower = np.clip(lower, lo, hi)
    upper = np.clip(lower + width, lo, hi)
    lower = np.minimum(lower, upper)
    as_tensor = lambda a: torch.tensor(a, dtype=dtype).reshape(1, n)  # noqa: E731
    lower_t, upper_t = as_tensor(lower), as_tensor(upper)
    return lower_t, torch.maximum(upper_t, lower_t)  # rounding to float32 must keep l <= u


def grid(lower: torch.Tensor, upper: torch.Tensor, points=(), steps: int = 1001) -> torch.Tensor:
    """``(steps + len(points), *lower.shape)``: evenly spaced points of ``[l, u]`` (ends included) and the
    given points where they fall inside."""
    t = torch.linspace(0, 1, steps, dtype=lower.dtype).reshape(-1, *([1] * lower.dim()))
    extra = [torch.minimum(torch.maximum(torch.full_like(lower, p), lower), upper) for p in points]
    # l + (u - l) may round past u
    inner = torch.minimum(torch.maximum(lower + t * (upper - lower), lower), upper)
    return torch.cat([inner, *(e.unsqueeze(0) for e in extra)])


def face_line(face) -> tuple[torch.Tensor, torch.Tensor]:
    """Slope and offset of an element-wise face."""
    if isinstance(face, ElementwiseFace):
        return face.slope, face.offset
    if face.constant:  # a step function's face: the constant offset
        return torch.zeros_like(face.offset), face.offset
    assert isinstance(face, RelaxationFace)
    return face.relaxation.slope, face.offset


def assert_encloses(fn, faces: Faces, lower, upper, points=(), ulps: float = 64.0) -> None:
    """Both faces on the right side of ``fn`` at every grid point, up to rounding (``ulps`` units in the last
    place of the largest term). Per-row faces ``(1, K, n)`` are checked row by row."""
    eps = torch.finfo(lower.dtype).eps
    for side, sign in ((faces.lower, 1.0), (faces.upper, -1.0)):
        slope, offset = face_line(side)
        rows = slope.shape[1] if slope.dim() == 3 else None
        for r in range(rows or 1):
            s, o = (slope[:, r], offset[:, r]) if rows else (slope, offset)
            s, o = s.expand_as(lower), o.expand_as(lower)
            x = grid(lower, upper, points)
            values, line = fn(x), s * x + o
            tol = ulps * eps * (1 + values.abs() + (s * x).abs() + o.abs())
            gap = sign * (values - line)
            assert torch.isfinite(line).all(), "a face is not finite"
            worst = int((gap + tol).argmin())
            assert (gap >= -tol).all(), (f"{'lower' if sign > 0 else 'upper'} face crosses the function by "
                                         f"{float(-gap.flatten()[worst]):.3g} (interval "
                                         f"[{float(lower.flatten()[worst % lower.numel()]):.9g}, "
                                         f"{float(upper.flatten()[worst % lower.numel()]):.9g}])")


def all_faces(layer, lower, upper, rng: np.random.Generator, k: int = 4):
    """The layer's faces on ``[l, u]``: adaptive, at random per-row parameters far inside and outside the
    declared range, and at those parameters projected (every value the optimiser may try)."""
    faces = layer.faces(lower, upper)
    if not isinstance(faces, ParametricFaces):
        yield faces
        return
    yield faces.faces(faces.initial())
    for scale in (1.0, 50.0):
        theta = tuple(torch.tensor(rng.normal(size=(1, k, lower.shape[1])) * scale, dtype=lower.dtype)
                      + p.unsqueeze(1) for p in faces.initial())
        yield faces.faces(theta)
        yield faces.faces(faces.project(theta))


def one_node(op: str, attrs=None, inits=None, opset: int = 17, shape=(6,), inputs=None):
    """A model of one ``op`` node on the input (constant inputs by name in ``inits``)."""
    inits = dict(inits or {})
    node = helper.make_node(op, inputs or ["input", *inits], ["output"], **(attrs or {}))
    return make_model([node], list(shape), list(shape), inits, opset=opset)


def layer_of(model, shape=(6,)):
    """The dual layer of the model's only variable node, built from the ONNX node as in production."""
    net = onnxdual.load(model)
    steps = build_dual(net, torch.zeros(1, *shape)).steps
    assert len(steps) == 1
    return steps[0].layer


def assert_matches_onnxruntime(model, fn, x: np.ndarray) -> None:
    """The layer's own function (what its faces enclose) equals onnxruntime on the model."""
    expected = run_ort(model, x)
    got = fn(torch.tensor(x, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-6)


def assert_network_sound(model, x: np.ndarray, eps: float, relaxation: str, rng: np.random.Generator,
                         rows: int = 6) -> torch.Tensor:
    """Certified lower bounds of random ``c . f(x')`` over the box never exceed what PGD or sampling finds."""
    net = onnxdual.load(model)
    xt = torch.tensor(x, dtype=torch.float32)
    n_out = int(np.prod(run_ort(model, x).shape[1:]))
    c = torch.tensor(rng.normal(size=(x.shape[0], rows, n_out)), dtype=torch.float32)
    lb = onnxdual.DualNetwork(net, xt, eps, relaxation=relaxation).lower_bound(c).detach()
    assert torch.isfinite(lb).all()
    box = onnxdual.Box(xt - eps, xt + eps)
    pts = box.sample(1000, torch.Generator().manual_seed(0))
    with torch.no_grad():
        vals = torch.einsum("sbo,bmo->sbm", net(pts.flatten(0, 1)).reshape(1000, x.shape[0], n_out), c)
    sampled = vals.min(0).values
    for b in range(x.shape[0]):
        attacked = pgd_minimize(net, c[b].numpy(), x[b] - eps, x[b] + eps, steps=30, restarts=3, seed=b)
        found = np.minimum(sampled[b].numpy(), attacked)
        tol = 1e-4 * (1 + np.abs(found))
        assert (lb[b].numpy() <= found + tol).all(), (relaxation, lb[b].numpy() - found)
    return lb


# -- one table row per operator use, and the checks every row gets ----------------------------------------
@dataclass(frozen=True)
class OpCase:
    """One use of an element-wise operator: attributes, constant inputs, the opsets to test (where the
    operator changed), the inputs its function is finite on (``domain``), points where its pieces meet, and
    how a network feeds it (``pre = scale * (x W) + shift``, inside the domain for inputs near 0)."""

    op: str
    attrs: dict = field(default_factory=dict)
    inits: dict = field(default_factory=dict)
    opsets: tuple[int, ...] = (17,)
    domain: tuple[float, float] = (-8.0, 8.0)
    points: tuple[float, ...] = ()
    scale: float = 1.0
    shift: float = 0.0
    inputs: tuple[str, ...] | None = None

    @property
    def id(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.attrs.items())
        consts = ",".join(f"{k}={np.asarray(v).ravel()[:1][0]:g}" for k, v in self.inits.items())
        return self.op + (f"[{extra}]" if extra else "") + (f"[{consts}]" if consts else "")

    def model(self, opset: int | None = None, shape=(6,)):
        return one_node(self.op, self.attrs, self.inits, opset or self.opsets[-1], shape, self.inputs)


def layer_function(layer):
    """The function a built element-wise layer encloses."""
    return layer.curve.fn if hasattr(layer, "curve") else layer.fn


def check_one_node(case: OpCase, opset: int, rng: np.random.Generator) -> None:
    """onnxruntime parity of the converted node and of the layer's own function, and sampled soundness of
    the one-node bounds (tests/dual_checks.py) at an input inside the domain."""
    from tests.dual_checks import check_dual

    model = case.model(opset)
    lo, hi = max(case.domain[0], -6.0), min(case.domain[1], 6.0)
    x = rng.uniform(lo, hi, size=(3, 6)).astype(np.float32)
    eps = min(0.3, (hi - lo) / 8)
    x = np.clip(x, lo + eps, hi - eps)
    check_dual(model, x, eps=eps)
    dense = np.linspace(lo, hi, 6 * 400, dtype=np.float32).reshape(400, 6)
    dense = np.concatenate([dense, np.clip(np.array(case.points or [lo], dtype=np.float32), lo, hi)
                            .repeat(6)[None, :6]])
    assert_matches_onnxruntime(model, layer_function(layer_of(model)), dense)


def check_dense_grid(case: OpCase, dtype: torch.dtype, rng: np.random.Generator) -> None:
    """Paper relaxation, interval bounds and every face the optimiser may choose enclose the layer's function
    on a dense grid of random intervals of its domain (breaks included)."""
    layer = layer_of(case.model())
    fn = layer_function(layer)
    lower, upper = (t.reshape(-1, 6) for t in intervals(rng, 240, dtype, case.domain, case.points))
    relax = layer.relax(lower, upper)
    assert_encloses(fn, Faces.of(relax), lower, upper, case.points)
    low, high = layer.interval(lower, upper)
    values = fn(grid(lower, upper, case.points))
    tol = 64 * torch.finfo(dtype).eps * (1 + values.abs())
    assert (values >= low - tol).all() and (values <= high + tol).all()
    for faces in all_faces(layer, lower, upper, rng):
        assert_encloses(fn, faces, lower, upper, case.points)


def network(case: OpCase, rng: np.random.Generator):
    """``x (4) -> MatMul -> scale, shift -> op -> MatMul -> (3)``."""
    w1 = rng.normal(size=(4, 6)).astype(np.float32) * case.scale
    w2 = rng.normal(size=(6, 3)).astype(np.float32)
    inits = {"W1": w1, "S": np.full(6, case.shift, dtype=np.float32), "W2": w2, **case.inits}
    inputs = list(case.inputs or ["p", *case.inits])
    inputs = [("p" if name == "input" else name) for name in inputs]
    nodes = [helper.make_node("MatMul", ["input", "W1"], ["h"]), helper.make_node("Add", ["h", "S"], ["p"]),
             helper.make_node(case.op, inputs, ["a"], **case.attrs),
             helper.make_node("MatMul", ["a", "W2"], ["output"])]
    return make_model(nodes, [4], [3], inits, opset=max(17, case.opsets[-1]))


def op_tests(cases: list[OpCase], rng: np.random.Generator, relaxations=("paper", "adaptive", "optimized")):
    """The three tests every table of operator uses gets (assign them to ``test_*`` names in the module):
    onnxruntime parity at every opset, dense-grid soundness in float32 and float64, network soundness in
    every relaxation."""
    import pytest

    ids = lambda c: c.id if isinstance(c, OpCase) else None  # noqa: E731

    @pytest.mark.parametrize("case", cases, ids=ids)
    def one_node(case):
        for opset in case.opsets:
            check_one_node(case, opset, rng)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
    @pytest.mark.parametrize("case", cases, ids=ids)
    def dense_grid(case, dtype):
        check_dense_grid(case, dtype, rng)

    @pytest.mark.parametrize("relaxation", list(relaxations))
    @pytest.mark.parametrize("case", cases, ids=ids)
    def network_sound(case, relaxation):
        x = rng.normal(size=(2, 4)).astype(np.float32)
        assert_network_sound(network(case, rng), x, 0.4, relaxation, rng)

    return one_node, dense_grid, network_sound
