"""Shared fixtures. ``../shared`` (development data) is optional: tests that need it skip with a reason
when it is absent, and CI (``.ci/run``) sets ONNXDUAL_REQUIRE_SHARED=1 so a missing folder fails instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ONNXDUAL_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip (fail in CI) when the folder is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("ONNXDUAL_REQUIRE_SHARED") == "1":
            pytest.fail(f"{path} is missing but CI requires ../shared")
        pytest.skip(f"needs the development data folder {path} (not part of a user's clone)")
    return path


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture
def dual_check():
    """check_dual(model, x, eps, ...): one-node ONNX parity with onnxruntime + soundness (+ exactness)."""
    from tests.dual_checks import check_dual

    return check_dual


@pytest.fixture
def onnx_model():
    """make_model(nodes, input_shape, output_shape, initializers, opset): a tiny ONNX model."""
    from tests.onnx_builders import make_model

    return make_model


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and CI runs two test workers on two cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
