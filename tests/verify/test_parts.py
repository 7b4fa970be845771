"""The parts of the verifier on their own: the batched cases (onnxdual.verify.problem), the simplex projection
of the row weights (bounding), witnesses confirmed only by onnxruntime (counterexamples), the deadline, and
the layout of the package (no cycle, no private name crossing a module, small modules)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import onnxdual.verify
from onnxdual.errors import DeadlineExceeded, InvalidInputError
from onnxdual.verify import TIMEOUT, Deadline, Verifier
from onnxdual.verify.bounding import project_simplex
from onnxdual.verify.counterexamples import Counterexamples, OnnxReplay, WitnessFound
from onnxdual.verify.problem import Model, Problem, batch_cases, f32_down, f32_up
from tests.verify.conftest import prop_of, run_ort


def test_cases_are_padded_normalised_and_rounded_inwards():
    prop = prop_of([([0.1, 0.0], [0.3, 1.0], [([[3.0, 4.0]], [5.0]), ([[1.0, 0.0], [0.0, 2.0]], [1.0, 2.0])]),
                    ([0.0, 0.0], [1.0, 1.0], [([[0.0, -1.0]], [0.0])])], 2, 2)
    cases = batch_cases(prop, 2)
    assert cases.a.shape == (2, 2, 2, 2) and cases.index == [0, 1]
    assert torch.allclose(cases.a[0, 0, 0], torch.tensor([0.6, 0.8], dtype=torch.float64))
    assert cases.b[0, 0, 0].item() == pytest.approx(1.0)
    assert cases.rows.tolist() == [[[True, False], [True, True]], [[True, False], [False, False]]]
    assert cases.disjuncts.tolist() == [[True, True], [True, False]]
    assert cases.inner_lo[0, 0].item() >= 0.1 and cases.inner_hi[0, 0].item() <= 0.3
    assert bool(cases.has_points.all())


def test_violation_is_the_minimum_over_open_conjunctions_of_the_maximum_over_rows():
    prop = prop_of([([0.0], [1.0], [([[1.0, 0.0], [0.0, 1.0]], [1.0, 1.0]), ([[-1.0, 0.0]], [0.0])])], 1, 2)
    cases = batch_cases(prop, 1)
    y = torch.tensor([[2.0, 0.5]], dtype=torch.float64)
    both = torch.tensor([[True, True]])
    assert cases.violation(y, torch.tensor([0]), both).item() == pytest.approx(-2.0)  # y0 >= 0 holds
    first = torch.tensor([[True, False]])
    assert cases.violation(y, torch.tensor([0]), first).item() == pytest.approx(1.0)  # y0 <= 1 fails by 1


def test_no_unsafe_case_and_bad_boxes():
    assert batch_cases(prop_of([([1.0], [0.0], [([[1.0]], [0.0])])], 1, 1), 1) is None  # an empty box
    with pytest.raises(InvalidInputError):
        batch_cases(prop_of([([0.0], [1.0], [([[1.0]], [0.0])])], 1, 1), 2)
    with pytest.raises(InvalidInputError):
        batch_cases(prop_of([([0.0], [math.inf], [([[1.0]], [0.0])])], 1, 1), 1)


def test_float32_rounding_brackets_the_value():
    v = np.array([0.1, -0.1, 1.0, 1e-40, 3e38])
    down, up = f32_down(v), f32_up(v)
    assert np.all(down.astype(np.float64) <= v) and np.all(up.astype(np.float64) >= v)
    assert np.all((np.nextafter(down, np.float32(np.inf)).astype(np.float64) > v) | (down == v))
    assert down[2] == up[2] == np.float32(1.0)


def test_the_simplex_projection_meets_its_optimality_conditions():
    # p = max(v - theta, 0) on the valid entries with sum(p) = 1 characterises the projection (KKT)
    rng = np.random.default_rng(0)
    valid = torch.tensor([[True, True, False, True]])
    for _ in range(50):
        v = torch.from_numpy(rng.normal(size=(1, 4)) * 2)
        p = project_simplex(v, valid)[0]
        assert p[2] == 0 and torch.all(p >= 0) and p.sum().item() == pytest.approx(1.0)
        on = [i for i in (0, 1, 3) if p[i] > 0]
        theta = float(v[0, on[0]] - p[on[0]])
        assert all(float(v[0, i] - p[i]) == pytest.approx(theta) for i in on)
        assert all(float(v[0, i]) <= theta + 1e-12 for i in (0, 1, 3) if p[i] == 0)


class _Shifted:
    """An onnxruntime session whose outputs are the network's plus a shift."""

    def __init__(self, session, shift):
        self.session, self.shift = session, shift

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feed):
        return [np.asarray(self.session.run(names, feed)[0]) + self.shift]


def test_a_witness_needs_onnxruntime_to_agree(mlp):
    x = np.array([0.25, -0.5], np.float32)
    y = run_ort(mlp, x).astype(np.float64)
    prop = prop_of([([0.0, -1.0], [1.0, 0.0], [([[-1.0, 0.0]], [-y[0]])])], 2, 2)  # unsafe: y0 >= y0(x)
    problem = Problem(Model(mlp.net, mlp.example_shape, torch.device("cpu")), batch_cases(prop, 2))
    with pytest.raises(WitnessFound) as found:
        Counterexamples(problem, OnnxReplay(mlp.session, mlp.input_shape)).confirm(x, 0)
    assert np.array_equal(found.value.x, x) and found.value.case == 0
    lower = Counterexamples(problem, OnnxReplay(_Shifted(mlp.session, np.float32(-1e-3)), mlp.input_shape))
    lower.confirm(x, 0)  # onnxruntime computes a smaller y0: no witness


def test_deadline_check_and_decide_by_a_deadline(mlp):
    with pytest.raises(DeadlineExceeded):
        Deadline(-1).check()
    Deadline(10).check()
    prop = prop_of([([-1.0, -1.0], [1.0, 1.0], [([[-1.0, 0.0]], [-100.0])])], 2, 2)
    assert Verifier.for_network(mlp).decide(prop, Deadline(-1)).answer == TIMEOUT
    assert Verifier.for_network(mlp).decide(prop, Deadline(10)).answer == "unsat"


def _verify_modules() -> dict[str, ast.Module]:
    """The modules of the decision procedure (the network loader belongs to the ONNX frontend)."""
    root = Path(onnxdual.verify.__file__).parent
    return {f"onnxdual.verify.{p.stem}": ast.parse(p.read_text()) for p in sorted(root.glob("*.py"))
            if p.stem not in ("__init__", "network")}


def test_the_package_layout():
    modules = _verify_modules()
    imports: dict[str, set[str]] = {}
    for name, tree in modules.items():
        imports[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("onnxdual"):
                imports[name].add(node.module)
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{name} imports private {private} from {node.module}"
            if isinstance(node, ast.Attribute) and node.attr[:1] == "_" and node.attr[:2] != "__":
                assert isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"), \
                    f"{name} reaches into {ast.unparse(node)}"
        assert ast.get_docstring(tree), f"{name} has no docstring"
    for path in Path(onnxdual.verify.__file__).parent.glob("*.py"):
        assert len(path.read_text().splitlines()) < 500, path

    def reach(start: str, seen: set[str]) -> set[str]:
        for dep in imports.get(start, ()):
            if dep not in seen:
                seen.add(dep)
                reach(dep, seen)
        return seen

    for name in modules:
        assert name not in reach(name, set()), f"import cycle through {name}"


def test_no_lazy_imports_hide_a_cycle():
    for name, tree in _verify_modules().items():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
                assert not inner, f"{name}.{fn.name} imports inside a function"
