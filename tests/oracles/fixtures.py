"""Fixtures of the soundness tests (``tests/conftest.py`` belongs to the shared fixtures; import these into a
test module to use them: ``from tests.oracles.fixtures import torch_one_thread  # noqa: F401``)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run torch single-threaded for the module: the soundness networks are tiny, and on a busy 2-core
    machine intra-op threads only add synchronisation (measured: 4x slower PGD). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
