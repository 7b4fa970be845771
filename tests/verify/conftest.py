"""Shared fixtures of the verify tests: two tiny ONNX networks loaded with :func:`load_network`, and
helpers to state properties and check answers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from onnxdual.specs import InputRegion, OutputConstraint, Property
from onnxdual.verify import load_network
from tests.onnx_builders import make_model


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """2 -> 8 -> 8 -> 2 ReLU network (fixed random weights)."""
    rng = np.random.default_rng(3)
    init = {"W1": rng.normal(size=(8, 2)).astype(np.float32),
            "B1": rng.normal(size=8).astype(np.float32) * .3,
            "W2": (rng.normal(size=(8, 8)) / 3).astype(np.float32),
            "B2": rng.normal(size=8).astype(np.float32) * .3,
            "W3": (rng.normal(size=(2, 8)) / 3).astype(np.float32), "B3": np.zeros(2, np.float32)}
    nodes = [helper.make_node("Gemm", ["input", "W1", "B1"], ["h1"], transB=1),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Gemm", ["r1", "W2", "B2"], ["h2"], transB=1),
             helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("Gemm", ["r2", "W3", "B3"], ["output"], transB=1)]
    path = save(make_model(nodes, [2], [2], init), tmp_path_factory.mktemp("mlp") / "mlp.onnx")
    return load_network(path)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """1 input, y = [relu(x), relu(x)] (two equal outputs): y0 >= 0.6 and y1 <= 0.4 is unreachable, but no
    single constraint row shows it."""
    init = {"W": np.ones((2, 1), np.float32)}
    nodes = [helper.make_node("Relu", ["input"], ["r"]),
             helper.make_node("Gemm", ["r", "W"], ["output"], transB=1)]
    path = tmp_path_factory.mktemp("twin") / "twin.onnx"
    return load_network(save(make_model(nodes, [1], [2], init), path))


def prop_of(cases, n_in, n_out) -> Property:
    return Property(n_in, n_out, [(InputRegion(lo, hi), [OutputConstraint(np.atleast_2d(a), np.atleast_1d(b))
                                                         for a, b in conj]) for lo, hi, conj in cases])


def output_range(network, lo, hi, j, n=4000):
    x = np.random.default_rng(0).uniform(lo, hi, size=(n, len(lo))).astype(np.float32)
    with torch.no_grad():
        y = network.net(torch.from_numpy(x).reshape(n, *network.example_shape)).reshape(n, -1).numpy()
    return float(y[:, j].min()), float(y[:, j].max())


def run_ort(network, x):
    sess = network.session
    feed = {sess.get_inputs()[0].name: x.reshape(network.input_shape)}
    return np.asarray(sess.run(None, feed)[0]).reshape(-1)
