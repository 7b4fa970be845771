"""GlobalMaxPool: onnx2torch converts none, so the frontend lowers it to ReduceMax over the spatial axes
(keepdims=1) before conversion (onnxdual/frontend/lowering.py). One-node models against onnxruntime at
opsets where ReduceMax takes its axes as an attribute (13) and as an input (18), 1-3 spatial axes, sampled
soundness of their bounds in every relaxation, and a small network whose certified bounds PGD never beats."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import helper

import onnxdual
from onnxdual.frontend.lowering import global_max_pools
from onnxdual_cli.main import cli
from tests.dual_checks import check_dual
from tests.onnx_builders import make_model, run_ort
from tests.oracles.attacks import pgd_minimize

pytestmark = pytest.mark.usefixtures("one_thread")
RELAXATIONS = ("paper", "adaptive", "optimized")


def _global_max(shape, opset):
    out = [shape[0]] + [1] * (len(shape) - 1)
    node = helper.make_node("GlobalMaxPool", ["input"], ["output"])
    return make_model([node], list(shape), out, opset=opset)


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 3), (2, 3, 2, 2)])
def test_lowered_to_reduce_max_matches_onnxruntime(opset, shape):
    model = _global_max(shape, opset)
    lowered = global_max_pools(onnx.ModelProto.FromString(model.SerializeToString()))
    assert [n.op_type for n in lowered.graph.node] == ["ReduceMax"]
    x = np.random.default_rng(opset).normal(size=(4, *shape)).astype(np.float32)
    np.testing.assert_array_equal(run_ort(lowered, x), run_ort(model, x))  # the same function, exactly


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("opset,shape", [(13, (2, 4, 3)), (18, (3, 3, 3)), (17, (2, 6))])
def test_one_node_bounds_are_sound(opset, shape, relaxation):
    x = np.random.default_rng(1).normal(size=(3, *shape))
    check_dual(_global_max(shape, opset), x, eps=0.4, relaxation=relaxation)  # onnxruntime parity + samples


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_a_network_with_global_max_pool_is_bounded_soundly(relaxation):
    """Conv -> Relu -> GlobalMaxPool -> Flatten -> Gemm: no lower bound of c . f exceeds what PGD finds."""
    rng = np.random.default_rng(5)
    inits = {"W": rng.normal(size=(4, 2, 3, 3)).astype(np.float32),
             "B": rng.normal(size=4).astype(np.float32), "G": rng.normal(size=(3, 4)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["input", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalMaxPool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "G"], ["output"], transB=1)]
    model = make_model(nodes, [2, 5, 5], [3], inits, opset=13)
    net = onnxdual.load(model)
    x = rng.normal(size=(2, 2, 5, 5)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.tensor(x)).numpy(), run_ort(model, x), rtol=1e-5, atol=1e-5)
    c = torch.tensor(rng.normal(size=(2, 4, 3)), dtype=torch.float32)
    eps = 0.2
    lb = onnxdual.DualNetwork(net, torch.tensor(x), eps, relaxation=relaxation).lower_bound(c).detach()
    for b in range(2):
        found = pgd_minimize(net, c[b].numpy(), x[b] - eps, x[b] + eps, steps=40, restarts=4, seed=b)
        assert (lb[b].numpy() <= found + 1e-4 * (1 + np.abs(found))).all(), lb[b].numpy() - found


def test_ops_and_supports_list_it():
    runner = CliRunner()
    ops = runner.invoke(cli, ["ops"], catch_exceptions=False).stdout
    assert any(line.split()[:1] == ["GlobalMaxPool"] and "onnxdual" in line for line in ops.splitlines())
    listed = runner.invoke(cli, ["supports", "--onnx-operators"], catch_exceptions=False).stdout.split()
    assert "GlobalMaxPool" in listed
