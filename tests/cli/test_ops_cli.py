"""``onnxdual ops``, ``supports --onnx-operators`` and ``plugins-guide``: what a pip user sees about the
operators onnxdual bounds and how to add one."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import helper

import onnxdual
from onnxdual.errors import UnsupportedOpsError
from onnxdual_cli.main import cli
from tests.onnx_builders import make_model

NEW_OPS = ["Concat", "Slice", "Split", "Squeeze", "Unsqueeze", "Gather", "GatherElements", "ReduceSum",
           "ReduceMean", "Sum", "Mean", "ConvTranspose", "Resize", "Upsample", "Expand", "Tile",
           "DepthToSpace", "SpaceToDepth", "Einsum"]


def _invoke(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_ops_lists_the_structural_operators_as_builtins():
    rows = {line.split()[0]: line for line in _invoke("ops").splitlines()}
    for op in NEW_OPS:
        assert op in rows and rows[op].split()[-2] == "onnxdual", op


def test_supports_onnx_operators_lists_them():
    listed = set(_invoke("supports", "--onnx-operators").split())
    assert set(NEW_OPS) <= listed


def test_plugins_guide_ships_with_the_package():
    text = _invoke("plugins-guide")
    assert "entry-point group" in text and "onnxdual.duals" in text and "AffineDual" in text


def test_missing_operators_are_all_named_with_help_a_pip_user_has():
    nodes = [helper.make_node("Tan", ["input"], ["a"]), helper.make_node("Acos", ["a"], ["b"]),
             helper.make_node("Slice", ["b", "s", "e"], ["output"])]
    model = make_model(nodes, [4], [2], {"s": np.array([0]), "e": np.array([2])})
    with pytest.raises(UnsupportedOpsError) as info:
        onnxdual.load(model)
    message = str(info.value)
    assert "Tan" in message and "Acos" in message and "Slice" not in message
    assert "onnxdual plugins-guide" in message and "plugins/README" not in message
