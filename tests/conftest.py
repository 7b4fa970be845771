"""Shared fixtures. ``../shared`` (development data) is optional: tests that need it skip with a reason
when it is absent, and CI (``.ci/run``) sets ONNXDUAL_REQUIRE_SHARED=1 so a missing folder fails instead.
The test plugin (``tests/plugin_fixture``) is registered per test by the ``test_plugin`` fixture, never
installed: running the tests leaves the user's environment as it was."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ONNXDUAL_SHARED", REPO.parent / "shared"))
PLUGIN_FIXTURE = REPO / "tests" / "plugin_fixture"


_SEED_ENV = "ONNXDUAL_SOUNDNESS_SEED"


def pytest_addoption(parser):
    parser.addoption("--soundness-seed", type=int, default=None,
                     help="seed of the randomised soundness and fault tests (default: fresh each run, printed)")


def pytest_configure(config):
    seed = config.getoption("--soundness-seed")
    if seed is None:
        seed = int(os.environ.get(_SEED_ENV) or secrets.randbelow(2 ** 31))
    os.environ[_SEED_ENV] = str(seed)  # xdist workers start after this and inherit it
    config.soundness_seed = seed


def pytest_report_header(config):
    return f"soundness seed: {config.soundness_seed} (replay with --soundness-seed {config.soundness_seed})"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if exitstatus != 0:  # the header is hidden with -q: repeat the seed where a failure is read
        terminalreporter.write_line(f"soundness seed: {config.soundness_seed} "
                                    f"(replay with --soundness-seed {config.soundness_seed})")


@pytest.fixture(scope="session")
def soundness_seed(request) -> int:
    """The run's seed of the randomised soundness and fault tests (see the module docstring)."""
    return request.config.soundness_seed


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


def _plugin_entry_points(pyproject: Path) -> tuple[str, str, list[str]]:
    """Name, version and ``onnxdual.duals`` entry-point lines of the test plugin's ``pyproject.toml`` (a
    flat file: ``key = "value"`` lines under their section headers)."""
    section, fields, entries = "", {}, []
    for line in pyproject.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif "=" in line and section == "[project]":
            key, _, value = line.partition("=")
            fields[key.strip()] = value.strip().strip('"')
        elif "=" in line and section == '[project.entry-points."onnxdual.duals"]':
            key, _, value = line.partition("=")
            entries.append(f"{key.strip()} = {value.strip().strip(chr(34))}")
    return fields["name"], fields["version"], entries


@pytest.fixture
def test_plugin(tmp_path, monkeypatch):
    """The test plugin registered for one test without installing it: its package on ``sys.path`` and a
    temporary ``.dist-info`` with its entry points, so the registry finds it through package metadata
    exactly like an installed plugin. Yields the plugin's module."""
    from onnxdual import registry

    name, version, entries = _plugin_entry_points(PLUGIN_FIXTURE / "pyproject.toml")
    info = tmp_path / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[onnxdual.duals]\n" + "".join(f"{e}\n" for e in entries))
    monkeypatch.syspath_prepend(str(PLUGIN_FIXTURE))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    import onnxdual_testplugin

    yield onnxdual_testplugin
    registry.refresh()  # the next lookup scans sys.path again, after monkeypatch has restored it
