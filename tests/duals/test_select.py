"""Where (onnxdual/duals/select.py): a condition that depends on the network input selects between two
values: one-node models against onnxruntime, sampled soundness in every relaxation, exactness where the
condition cannot change."""

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
from onnxdual.engine.autodual import RELAXATIONS
from tests.dual_checks import check_dual
from tests.onnx_builders import make_model

pytestmark = pytest.mark.usefixtures("one_thread")
THRESH = np.array([0.0, 0.5, -1.0, 2.0], np.float32)


def where_model(branches: str):
    """cond = input > THRESH; Where(cond, a, b) with a, b from ``branches``: "xc" (x, a constant), "cx", "xy"
    (x and -2 x: both variable), "cc" (two constants: only the condition varies)."""
    nodes = [helper.make_node("Greater", ["input", "T"], ["cond"]),
             helper.make_node("Mul", ["input", "M"], ["neg2"])]
    inits = {"T": THRESH, "M": np.float32(-2.0), "K": np.array([10.0, -3.0, 0.5, 1.0], np.float32),
             "K2": np.float32(-5.0)}
    names = {"xc": ("input", "K"), "cx": ("K", "input"), "xy": ("input", "neg2"), "cc": ("K", "K2")}[branches]
    nodes.append(helper.make_node("Where", ["cond", *names], ["output"]))
    return make_model(nodes, [4], [4], inits)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("branches", ["xc", "cx", "xy", "cc"])
def test_where_matches_onnxruntime_and_is_bounded_soundly(branches, relaxation):
    x = np.array([[0.1, 0.4, -1.0, 3.0], [-0.2, 0.9, -2.0, 2.0], [0.0, 0.5, 1.0, -4.0]], np.float32)
    for eps in (0.3, 0.05, 2.0):
        check_dual(where_model(branches), x, eps=eps, relaxation=relaxation)


def test_where_is_exact_where_the_condition_cannot_change():
    """x = [1, 2, -3, 5] +- 0.25 against THRESH: conditions true, true, false, true; Where(cond, x, -2 x)
    is then x, x, -2 x, x: each bound is exact (the box's ends)."""
    net = onnxdual.load(where_model("xy"))
    x = torch.tensor([[1.0, 2.0, -3.0, 5.0]])
    eye = torch.eye(4)
    c = torch.cat([eye, -eye]).unsqueeze(0)
    lb = onnxdual.DualNetwork(net, x, 0.25).lower_bound(c)
    low, high = lb[0, :4], -lb[0, 4:]
    torch.testing.assert_close(low, torch.tensor([0.75, 1.75, 5.5, 4.75]))
    torch.testing.assert_close(high, torch.tensor([1.25, 2.25, 6.5, 5.25]))


def test_where_with_an_undecided_condition_is_the_hull_of_both():
    net = onnxdual.load(where_model("xc"))
    x = torch.tensor([[0.0, 0.5, -1.0, 2.0]])  # every entry at its threshold: undecided
    eye = torch.eye(4)
    lb = onnxdual.DualNetwork(net, x, 0.5).lower_bound(torch.cat([eye, -eye]).unsqueeze(0))
    k = torch.tensor([10.0, -3.0, 0.5, 1.0])
    torch.testing.assert_close(lb[0, :4], torch.minimum(x[0] - 0.5, k))
    torch.testing.assert_close(-lb[0, 4:], torch.maximum(x[0] + 0.5, k))


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("second", ["K", "neg2"])
def test_a_constant_condition_selects_exactly_with_broadcasting(second, relaxation):
    """An attention-mask-like Where(mask, x, b): the mask (4,) a constant broadcast over x (3, 4), b a
    constant scalar or -2 x: an exact selection (affine), so the bounds are exact too."""
    mask = np.array([True, False, True, False])
    nodes = [helper.make_node("Mul", ["input", "M"], ["neg2"]),
             helper.make_node("Where", ["mask", "input", second], ["output"])]
    model = make_model(nodes, [3, 4], [3, 4], {"mask": mask, "M": np.float32(-2.0), "K": np.float32(-7.0)})
    x = np.random.default_rng(5).normal(size=(2, 3, 4)).astype(np.float32)
    check_dual(model, x, eps=0.2, relaxation=relaxation, exact=True)
