"""The torchvision stand-in lets onnx2torch import next to a broken torchvision without side effects on
other libraries: after ``onnxdual.load`` no stand-in is left in ``sys.modules`` and a later dynamo export
logs nothing about torchvision."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = """
import importlib.util, sys
from onnx import helper
import onnxdual
from tests.onnx_builders import make_model
onnxdual.load(make_model([helper.make_node("Relu", ["input"], ["output"])], [3], [3]))
stub = getattr(sys.modules.get("torchvision"), "__onnxdual_stub__", False)
print("stub-in-sys.modules", stub)
importlib.util.find_spec("torchvision")  # raised ValueError while the stand-in (no __spec__) was installed
if sys.argv[1] == "export":
    import torch
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), dynamo=True)
print("done")
"""


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=REPO, capture_output=True, text=True,
                          check=False)


def test_no_stand_in_left_in_sys_modules():
    result = _run("plain")
    assert result.returncode == 0, result.stderr
    assert "stub-in-sys.modules False" in result.stdout and "done" in result.stdout


@pytest.mark.slow
def test_dynamo_export_after_load_logs_nothing_about_torchvision():
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (the test extra)")
    result = _run("export")
    assert result.returncode == 0, result.stderr
    assert "torchvision" not in result.stderr, result.stderr[-2000:]
