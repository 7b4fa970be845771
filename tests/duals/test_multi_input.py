"""Multi-input non-linearities (Mul/Div/Max/Min of two variable tensors, MatMul of two variables) and the
non-element-wise Softmax / LogSoftmax / ReduceMax: one-node parity with onnxruntime, sampled soundness in
every relaxation, and the faces checked on dense grids of their input boxes for every parameter value."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
from onnxdual.duals.base import Faces, ParametricFaces
from onnxdual.duals.multi import MultiInputActivation, PackDual
from onnxdual.engine.build import build_dual
from tests.dual_checks import check_dual
from tests.onnx_builders import make_model

RELAXATIONS = ("paper", "adaptive", "optimized")


def two_branch_model(op: str, n: int = 5, opset: int = 17, positive_second: bool = False, seed: int = 0,
                     second_shape: tuple[int, ...] | None = None):
    """input (4,) -> two affine branches a, b (b > 0 if asked: Relu + 1) -> op(a, b) of shape (n,)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(4, n)).astype(np.float32)
    m = n if second_shape is None else int(np.prod(second_shape))
    w2 = rng.normal(size=(4, m)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["input", "W1"], ["a"]), helper.make_node("MatMul", ["input", "W2"], ["b0"])]
    inits = {"W1": w1, "W2": w2}
    last = "b0"
    if positive_second:
        nodes += [helper.make_node("Relu", ["b0"], ["b1"]), helper.make_node("Add", ["b1", "One"], ["b2"])]
        inits["One"] = np.float32(1.0)
        last = "b2"
    if second_shape is not None:
        nodes.append(helper.make_node("Reshape", [last, "S"], ["b3"]))
        inits["S"] = np.array([-1, *second_shape], dtype=np.int64)
        last = "b3"
    nodes.append(helper.make_node(op, ["a", last], ["output"]))
    return make_model(nodes, [4], [n], inits, opset=opset)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("op,opset", [("Mul", 7), ("Mul", 17), ("Div", 13), ("Max", 8), ("Max", 13), ("Min", 13)])
def test_two_variable_elementwise(op, opset, relaxation):
    model = two_branch_model(op, opset=opset, positive_second=op == "Div")
    x = np.random.default_rng(1).normal(size=(3, 4))
    check_dual(model, x, eps=0.25, relaxation=relaxation)


@pytest.mark.parametrize("op", ["Mul", "Max"])
def test_broadcast_second_operand(op):
    """(5,) * (1,): a gate shared by every unit (squeeze-excitation's broadcast)."""
    model = two_branch_model(op, second_shape=(1,))
    for relaxation in RELAXATIONS:
        check_dual(model, np.random.default_rng(2).normal(size=(2, 4)), eps=0.3, relaxation=relaxation)


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_with_a_constant(op, onnx_model):
    c = np.linspace(-1, 1, 6).astype(np.float32)
    model = onnx_model([helper.make_node(op, ["input", "C"], ["output"])], [6], [6], {"C": c}, 13)
    for relaxation in RELAXATIONS:
        check_dual(model, np.random.default_rng(3).normal(size=(3, 6)) * 0.5, eps=0.4, relaxation=relaxation)


def test_square_of_one_value(onnx_model):
    """x * x: the same value packed twice (looser than a square's own relaxation, still sound)."""
    w = np.random.default_rng(4).normal(size=(3, 3)).astype(np.float32)
    model = onnx_model([helper.make_node("MatMul", ["input", "W"], ["h"]), helper.make_node("Mul", ["h", "h"], ["output"])],
                       [3], [3], {"W": w})
    for relaxation in RELAXATIONS:
        check_dual(model, np.random.default_rng(5).normal(size=(2, 3)), eps=0.3, relaxation=relaxation)


def attention_model(tokens: int = 3, dim: int = 4, opset: int = 17, seed: int = 0):
    """input (tokens, dim) -> q, k, v -> Softmax(q k^T / 2) v: MatMul of two variables twice."""
    rng = np.random.default_rng(seed)
    ws = {k: (rng.normal(size=(dim, dim)) / 2).astype(np.float32) for k in ("Wq", "Wk", "Wv")}
    nodes = [helper.make_node("MatMul", ["input", "Wq"], ["q"]), helper.make_node("MatMul", ["input", "Wk"], ["k"]),
             helper.make_node("MatMul", ["input", "Wv"], ["v"]), helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Mul", ["s0", "Half"], ["s"]),
             helper.make_node("Softmax", ["s"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["output"])]
    return make_model(nodes, [tokens, dim], [tokens, dim], {**ws, "Half": np.float32(0.5)}, opset=opset)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_attention_block(relaxation):
    x = np.random.default_rng(6).normal(size=(2, 3, 4))
    check_dual(attention_model(), x, eps=0.05, relaxation=relaxation)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("op,opset,axis", [("Softmax", 11, 1), ("Softmax", 13, -1), ("Softmax", 13, 1),
                                           ("LogSoftmax", 11, 1), ("LogSoftmax", 13, -1)])
def test_softmax(op, opset, axis, relaxation, onnx_model):
    model = onnx_model([helper.make_node(op, ["input"], ["output"], axis=axis)], [3, 4], [3, 4], opset=opset)
    for eps in (0.05, 1.0):
        check_dual(model, np.random.default_rng(7).normal(size=(2, 3, 4)), eps=eps, relaxation=relaxation)


def reduce_node(op: str, opset: int, axes, keepdims: int):
    if opset >= 18:
        return [helper.make_node(op, ["input", "axes"], ["output"], keepdims=keepdims)], {
            "axes": np.array(axes, dtype=np.int64)}
    return [helper.make_node(op, ["input"], ["output"], axes=axes, keepdims=keepdims)], {}


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("op,opset,axes,keepdims,out", [
    ("ReduceMax", 13, [2, 3], 1, [2, 1, 1]), ("ReduceMax", 18, [-1], 0, [2, 3]), ("ReduceMin", 13, [1], 0, [3, 3]),
    ("ReduceMin", 18, [1, 3], 1, [1, 3, 1])])
def test_reduce_max(op, opset, axes, keepdims, out, relaxation, onnx_model):
    nodes, inits = reduce_node(op, opset, axes, keepdims)
    model = onnx_model(nodes, [2, 3, 3], out, inits, opset=opset)
    check_dual(model, np.random.default_rng(8).normal(size=(2, 2, 3, 3)), eps=0.4, relaxation=relaxation)


def layer_of(model, x: torch.Tensor):
    """The built network and its (first) multi-input activation step."""
    built = build_dual(onnxdual.load(model), x)
    return built, next(s for s in built.steps if isinstance(s.layer, MultiInputActivation))


def face_values(face, points: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
    """``A x + b`` of a face at packed points ``(P, n_in)`` for one example, through the face's own transpose
    on identity rows (exactly what the dual uses): ``(P, n_out)``."""
    n = int(np.prod(out_shape))
    eye = torch.eye(n).reshape(1, n, *out_shape)
    a = face.transpose(eye).reshape(n, -1)
    return points @ a.T + face.offset_term(eye).reshape(1, n)


BOXES = [(-1.0, 2.0, -3.0, 0.5), (0.2, 0.2001, -1e-3, 1e-3), (-50.0, 40.0, -0.1, 30.0), (1.0, 3.0, 2.0, 5.0),
         (-4.0, -1.0, -2.0, 6.0), (0.0, 0.0, -1.0, 1.0)]


@pytest.mark.parametrize("op", ["Mul", "Div", "Max", "Min"])
def test_faces_on_dense_grid(op):
    """Every McCormick / max plane, for every parameter value (ends of [0, 1], inside, random), lies below
    (above) the operation at every point of a 41 x 41 grid over each box, the vertices included; boxes range
    from very narrow to very wide, crossing 0 or not. The paper's parallelogram likewise."""
    n = len(BOXES)
    model = two_branch_model(op, n=n, positive_second=op == "Div")
    _, step = layer_of(model, torch.zeros(1, 4))
    layer: MultiInputActivation = step.layer
    lx, ux, ly, uy = (torch.tensor([b[i] for b in BOXES]).reshape(1, n) for i in range(4))
    if op == "Div":  # the divisor is positive here: shift its boxes above 0
        ly, uy = ly - ly.min() + 0.01 * (1 + torch.arange(n)), uy - ly.min() + 0.02 * (1 + torch.arange(n))
        uy = torch.maximum(uy, ly)
    lower, upper = layer.packing.pack((lx, ly), 1), layer.packing.pack((ux, uy), 1)
    t = torch.linspace(0, 1, 41)
    ta, tb = (g.flatten() for g in torch.meshgrid(t, t, indexing="ij"))
    xs = lx + (ux - lx) * ta.unsqueeze(1)
    ys = ly + (uy - ly) * tb.unsqueeze(1)
    true = {"Mul": xs * ys, "Div": xs / ys, "Max": torch.maximum(xs, ys), "Min": torch.minimum(xs, ys)}[op]
    points = torch.cat([xs, ys], 1)
    candidates = [Faces.of(layer.relax(lower, upper))]
    faces = layer.faces(lower, upper)
    if isinstance(faces, ParametricFaces):
        init = faces.initial()
        gen = torch.Generator().manual_seed(0)
        for value in (0.0, 1.0, 0.5, None):
            theta = tuple(torch.rand(t.shape, generator=gen) if value is None else torch.full_like(t, value)
                          for t in init)
            candidates.append(faces.faces(faces.project(theta)))
        candidates.append(faces.faces(init))
    else:
        candidates.append(faces)
    tol = 1e-5 * (1 + true.abs())
    for f in candidates:
        low, high = face_values(f.lower, points, (n,)), face_values(f.upper, points, (n,))
        assert (low <= true + tol).all(), f"{op}: lower face above by {(low - true).max()}"
        assert (high >= true - tol).all(), f"{op}: upper face below by {(true - high).max()}"


def test_mul_faces_exact_at_vertices():
    """McCormick's planes touch x*y at the box's vertices: the adaptive faces are the tightest planes there."""
    model = two_branch_model("Mul", n=1)
    _, step = layer_of(model, torch.zeros(1, 4))
    lower, upper = torch.tensor([[-1.0, 2.0]]), torch.tensor([[3.0, 5.0]])
    faces = step.layer.faces(lower, upper)
    lo = faces.faces((torch.ones(1, 1), torch.ones(1, 1)))
    # alpha = 1: the plane through (lx, .) and (., ly): equal to x*y on x = lx and y = ly
    pts = torch.tensor([[-1.0, 2.0], [-1.0, 5.0], [3.0, 2.0]])
    vals = face_values(lo.lower, pts, (1,)).squeeze(1)
    np.testing.assert_allclose(vals.numpy(), (pts[:, 0] * pts[:, 1]).numpy(), rtol=1e-6)


def test_packing_step_and_single_input_untouched():
    """A two-input activation gets a pack step in front (exact: its transpose is the adjoint of its map);
    single-input activations get none."""
    built, step = layer_of(two_branch_model("Mul"), torch.zeros(1, 4))
    i = built.steps.index(step)
    pack = built.steps[i - 1]
    assert isinstance(pack.layer, PackDual) and step.variable_inputs == (pack.node.name,)
    assert pack.variable_inputs == ("a", "b0") or len(pack.variable_inputs) == 2
    xs = (torch.randn(2, 5), torch.randn(2, 5))
    nu = torch.randn(2, 10)
    lhs = (pack.layer.linear(*xs) * nu).sum()
    rhs = sum((x * g).sum() for x, g in zip(xs, pack.layer.transpose(nu)))
    torch.testing.assert_close(lhs, rhs)
    relu_built = build_dual(onnxdual.load(attention_model()), torch.zeros(1, 3, 4))
    packs = [s for s in relu_built.steps if isinstance(s.layer, PackDual)]
    assert len(packs) == 2  # the two variable MatMuls; Softmax has one input and no pack


def test_divisor_containing_zero_is_refused():
    model = two_branch_model("Div")  # the divisor crosses 0 on a wide box
    dual = onnxdual.DualNetwork(onnxdual.load(model), torch.zeros(1, 4), 2.0)
    with pytest.raises(onnxdual.errors.UnboundedRelaxationError, match="contain 0"):  # bounds, not the net
        dual.lower_bound(torch.eye(5).unsqueeze(0))


def test_projections_estimate_the_paper_bound():
    """Random projections (Alg. 1) go through the packed relaxation like any linear dual: with many
    projections the estimate approaches the exact paper bound."""
    net = onnxdual.load(two_branch_model("Mul"))
    x = torch.tensor(np.random.default_rng(9).normal(size=(2, 4)), dtype=torch.float32)
    c = torch.eye(5).unsqueeze(0).expand(2, -1, -1)
    exact = onnxdual.DualNetwork(net, x, 0.1).lower_bound(c)
    estimate = onnxdual.DualNetwork(net, x, 0.1, proj=4000, generator=torch.Generator().manual_seed(0)).estimate(c)
    torch.testing.assert_close(estimate.value, exact, rtol=0.05, atol=0.05)


SOFTMAX_BOXES = [((-0.3, 0.1, 0.2), 0.01), ((-1.0, 0.5, 2.0), 0.5), ((0.0, 0.0, 0.0), 3.0), ((4.0, -4.0, 0.0), 1.5)]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_faces_on_dense_grid(op, onnx_model):
    """Both enclosures (Taylor with its remainder, the interval) and the chosen faces hold at every point of
    a 15^3 grid (the vertices included) of narrow to wide boxes around several centres."""
    model = onnx_model([helper.make_node(op, ["input"], ["output"], axis=-1)], [3], [3], opset=13)
    built = build_dual(onnxdual.load(model), torch.zeros(1, 3))
    layer = built.steps[-1].layer
    t = torch.linspace(0, 1, 15)
    grid = torch.stack(torch.meshgrid(t, t, t, indexing="ij"), -1).reshape(-1, 3)
    fn = torch.log_softmax if op == "LogSoftmax" else torch.softmax
    for centre, radius in SOFTMAX_BOXES:
        lower = torch.tensor([centre]) - radius
        upper = torch.tensor([centre]) + radius
        points = lower + (upper - lower) * grid
        true = fn(points, -1)
        tol = 1e-5 * (1 + true.abs())
        lo_i, hi_i = layer.interval(lower, upper)
        assert (lo_i - tol <= true).all() and (true <= hi_i + tol).all()
        for faces in (layer.faces(lower, upper), Faces.of(layer.relax(lower, upper))):
            low, high = face_values(faces.lower, points, (3,)), face_values(faces.upper, points, (3,))
            assert (low <= true + tol).all(), f"{op} {centre} {radius}: lower above by {(low - true).max()}"
            assert (high >= true - tol).all(), f"{op} {centre} {radius}: upper below by {(true - high).max()}"


def test_softmax_narrow_box_is_tight(onnx_model):
    """On a narrow box the Taylor enclosure wins and its width shrinks like the square of the radius."""
    model = onnx_model([helper.make_node("Softmax", ["input"], ["output"], axis=-1)], [4], [4], opset=13)
    layer = build_dual(onnxdual.load(model), torch.zeros(1, 4)).steps[-1].layer
    c = torch.tensor([[0.3, -0.2, 1.0, 0.0]])
    widths = [(layer.relax(c - r, c + r).high - layer.relax(c - r, c + r).low).max().item() for r in (1e-2, 1e-3)]
    assert widths[1] < widths[0] / 50


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_reduce_faces_on_dense_grid(op, onnx_model):
    model = onnx_model([helper.make_node(op, ["input"], ["output"], axes=[1], keepdims=1)], [3], [1], opset=13)
    layer = build_dual(onnxdual.load(model), torch.zeros(1, 3)).steps[-1].layer
    t = torch.linspace(0, 1, 15)
    grid = torch.stack(torch.meshgrid(t, t, t, indexing="ij"), -1).reshape(-1, 3)
    fn = (lambda p: p.amax(-1, keepdim=True)) if op == "ReduceMax" else (lambda p: p.amin(-1, keepdim=True))
    for lower, upper in (([-1.0, 0.5, 0.4], [0.0, 2.0, 0.6]), ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),
                         ([3.0, -5.0, 2.9], [3.1, 5.0, 3.05])):
        lower, upper = torch.tensor([lower]), torch.tensor([upper])
        points = lower + (upper - lower) * grid
        true = fn(points)
        for faces in (layer.faces(lower, upper), Faces.of(layer.relax(lower, upper))):
            low, high = face_values(faces.lower, points, (1,)), face_values(faces.upper, points, (1,))
            assert (low <= true + 1e-6).all() and (high >= true - 1e-6).all()


def test_matmul_faces_at_vertices_and_samples():
    """x @ y of (2, 3) and (3, 2) variables: every face (McCormick weights 0, 1, random per product, and the
    adaptive ones) holds at all 2^12 vertices of random boxes and at random points inside."""
    rng = np.random.default_rng(10)
    w = rng.normal(size=(2, 12)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["input", "W"], ["h"]),
             helper.make_node("Slice", ["h", "s0", "e0", "ax"], ["a0"]), helper.make_node("Slice", ["h", "e0", "e1", "ax"], ["b0"]),
             helper.make_node("Reshape", ["a0", "sa"], ["a"]), helper.make_node("Reshape", ["b0", "sb"], ["b"]),
             helper.make_node("MatMul", ["a", "b"], ["output"])]
    inits = {"W": w, "s0": np.array([0]), "e0": np.array([6]), "e1": np.array([12]), "ax": np.array([1]),
             "sa": np.array([-1, 2, 3]), "sb": np.array([-1, 3, 2])}
    model = make_model(nodes, [2], [2, 2], inits)
    _, step = layer_of(model, torch.zeros(1, 2))
    layer = step.layer
    corners = torch.tensor(np.array(np.meshgrid(*[[0.0, 1.0]] * 12, indexing="ij")).reshape(12, -1).T,
                           dtype=torch.float32)
    inside = torch.rand((2000, 12), generator=torch.Generator().manual_seed(0))
    for scale in (0.01, 1.0, 20.0):
        centre = torch.tensor(rng.normal(size=(1, 12)), dtype=torch.float32)
        radius = torch.tensor(rng.uniform(0, scale, size=(1, 12)), dtype=torch.float32)
        lower, upper = centre - radius, centre + radius
        points = lower + (upper - lower) * torch.cat([corners, inside])
        xs, ys = layer.packing.unpack(points, 1)
        true = (xs @ ys).reshape(len(points), 4)
        faces = layer.faces(lower, upper)
        init = faces.initial()
        candidates = [faces.faces(init), Faces.of(layer.relax(lower, upper))]
        for value in (0.0, 1.0, None):
            theta = tuple(torch.rand(t.shape, generator=torch.Generator().manual_seed(1)) if value is None
                          else torch.full_like(t, value) for t in init)
            candidates.append(faces.faces(theta))
        tol = 1e-4 * (1 + true.abs())
        for f in candidates:
            low, high = face_values(f.lower, points, (2, 2)), face_values(f.upper, points, (2, 2))
            assert (low <= true + tol).all(), f"lower face above by {(low - true).max()}"
            assert (high >= true - tol).all(), f"upper face below by {(true - high).max()}"
