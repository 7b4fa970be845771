"""Fixtures for the training tests."""

import pytest
import torch
from torch import nn

from tests.training.shared import export


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every training test runs single-threaded (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory):
    """A tiny conv net (Conv, Gemm as in the paper's small model) as an ONNX file."""
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 4, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 10))
    path = tmp_path_factory.mktemp("model") / "conv.onnx"
    export(seq, path)
    return path
