"""Shared fixtures of the command-line tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.onnx_builders import make_model


@pytest.fixture(scope="module")
def relu_net(tmp_path_factory) -> Path:
    """y = [relu(x0 + x1), relu(x0 - x1)] on a [1, 2] input (ONNX input shape (N, 2))."""
    w = np.array([[1.0, 1.0], [1.0, -1.0]], np.float32)
    nodes = [helper.make_node("Gemm", ["input", "W"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["output"])]
    path = tmp_path_factory.mktemp("net") / "net.onnx"
    onnx.save(make_model(nodes, [2], [2], {"W": w}), str(path))
    return path
