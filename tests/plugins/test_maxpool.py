"""The MaxPool plugin (plugins/onnxdual-maxpool): one-node ONNX tests against onnxruntime with soundness by
sampling, exactness of the lower bounds of a lone MaxPool, the enclosure itself, a pooled network against
sampling and PGD, and no unsound answer on the real VNN-COMP networks that use MaxPool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
from tests.onnx_builders import conv_maxpool_model

pytest.importorskip("onnxdual_maxpool", reason="plugins/onnxdual-maxpool is not installed")

rng = np.random.default_rng(11)

CASES = [  # attributes, input shape (C, *spatial), output shape
    ({"kernel_shape": [2, 2], "strides": [2, 2]}, [2, 6, 6], [2, 3, 3]),
    ({"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}, [1, 5, 5], [1, 5, 5]),
    ({"kernel_shape": [3, 2], "strides": [2, 1], "pads": [0, 1, 1, 0]}, [2, 5, 4], [2, 2, 4]),
    ({"kernel_shape": [2, 2], "strides": [1, 1], "dilations": [2, 2]}, [1, 5, 5], [1, 3, 3]),
    ({"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, [1, 5, 5], [1, 3, 3]),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, [1, 5, 6], [1, 3, 3]),
    ({"kernel_shape": [3], "strides": [2]}, [3, 9], [3, 4]),
]


@pytest.mark.parametrize("attrs,in_shape,out_shape", CASES)
def test_one_node_matches_onnxruntime_and_is_sound(dual_check, onnx_model, attrs, in_shape, out_shape):
    model = onnx_model([helper.make_node("MaxPool", ["input"], ["output"], **attrs)], in_shape, out_shape)
    dual_check(model, rng.normal(size=(3, *in_shape)), eps=0.4)


def test_a_box_without_perturbed_inputs_gives_the_value(onnx_model):
    """No input column at all (every coordinate fixed): the dual works on empty column sets."""
    attrs, in_shape, out_shape = CASES[0]
    model = onnx_model([helper.make_node("MaxPool", ["input"], ["output"], **attrs)], in_shape, out_shape)
    net = onnxdual.load(model)
    x = torch.from_numpy(rng.normal(size=(2, *in_shape)).astype(np.float32))
    n = int(np.prod(out_shape))
    with torch.no_grad():
        lb = onnxdual.DualNetwork(net, x, 0.0).lower_bound(torch.eye(n).expand(2, -1, -1))
        torch.testing.assert_close(lb, net(x).flatten(1))


@pytest.mark.parametrize("attrs,in_shape,out_shape", CASES[:4])
def test_lone_maxpool_lower_bounds_are_exact(onnx_model, attrs, in_shape, out_shape):
    """Over a box the minimum of a window's maximum is the largest lower bound in it: the dual finds it."""
    model = onnx_model([helper.make_node("MaxPool", ["input"], ["output"], **attrs)], in_shape, out_shape)
    net = onnxdual.load(model)
    x = torch.from_numpy(rng.normal(size=(2, *in_shape)).astype(np.float32))
    eps = torch.from_numpy(rng.uniform(0, 0.5, size=(2, *in_shape)).astype(np.float32))
    n = int(np.prod(out_shape))
    c = torch.cat([torch.eye(n), -torch.eye(n)]).expand(2, -1, -1)
    with torch.no_grad():
        lb = onnxdual.DualNetwork(net, x, eps).lower_bound(c)
        exact_low, exact_high = net(x - eps).flatten(1), net(x + eps).flatten(1)  # max is monotone
    torch.testing.assert_close(lb[:, :n], exact_low, rtol=1e-5, atol=1e-5)
    assert (-lb[:, n:] >= exact_high - 1e-5).all()


def test_relaxation_encloses_maxpool_and_selects_inside_the_window(onnx_model):
    attrs, in_shape, out_shape = CASES[2]
    model = onnx_model([helper.make_node("MaxPool", ["input"], ["output"], **attrs)], in_shape, out_shape)
    net = onnxdual.load(model)
    dual = onnxdual.DualNetwork(net, torch.zeros(2, *in_shape), 0.1)
    layer = next(s.layer for s in dual.built.steps if isinstance(s.layer, onnxdual.ActivationDual))
    lower = torch.from_numpy(rng.normal(size=(2, *in_shape)).astype(np.float32))
    upper = lower + torch.from_numpy(rng.uniform(0, 1, size=(2, *in_shape)).astype(np.float32))
    relax = layer.relax(lower, upper)
    pts = lower + torch.rand((500, *lower.shape), generator=torch.Generator().manual_seed(0)) * (upper - lower)
    for p in pts:
        value = net(p)
        selected = relax.apply(p.unsqueeze(1)).squeeze(1)
        assert (value >= selected + relax.low - 1e-6).all() and (value <= selected + relax.high + 1e-6).all()
    # the transpose is the adjoint of apply: <A x, nu> = <x, A^T nu>
    x, nu = torch.randn(2, 4, *in_shape), torch.randn(2, 4, *out_shape)
    torch.testing.assert_close((relax.apply(x) * nu).sum(), (x * relax.transpose(nu)).sum())


def test_in_a_convolutional_network(dual_check):
    model = conv_maxpool_model(rng)
    net, lower, _ = dual_check(model, rng.uniform(0, 1, size=(2, 1, 6, 6)), eps=0.1)
    from onnxdual.attack import pgd
    from onnxdual.engine.input_sets import Box

    x = torch.from_numpy(rng.uniform(0, 1, size=(2, 1, 6, 6)).astype(np.float32))
    box = Box(x - 0.1, x + 0.1)
    c = torch.eye(4).expand(2, -1, -1)
    lb = onnxdual.DualNetwork(net, x, 0.1).lower_bound(c)
    attack = pgd(net, box, c, steps=50, restarts=3).value
    assert (lb.min(1).values <= attack + 1e-5).all()  # the attack minimises the smallest row


def test_no_unsound_answer_on_vnncomp_maxpool_networks(shared, tmp_path):
    """verivital (VNN-COMP 2021) uses MaxPool in 10 of its 30 instances; their ground truth is known."""
    from onnxdual import bench

    root = shared("benchmarks", "vnncomp")
    instances = [i for i in bench.read_instances(root / "verivital_2021") if "maxpool" in i.onnx.lower()]
    assert instances, "the verivital MaxPool instances are missing"
    results = bench.run_benchmark(instances, max_timeout=10)
    results = bench.compare_expected(results, instances, bench.read_expected(root / "expected.csv"))
    assert not (results.answer == "unsupported").any(), results[["instance", "note"]]
    assert bench.unsound_rows(results).empty
    assert (results.verdict == "correct").sum() >= 1
