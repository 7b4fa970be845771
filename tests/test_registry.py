"""The registry: built-ins and third parties share the entry-point path; precedence; errors."""

from importlib import metadata

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
from onnxdual import registry
from onnxdual.errors import PluginLoadError
from tests.onnx_builders import make_model


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    registry.refresh()
    yield
    registry.refresh()


def test_builtins_are_found_through_entry_points():
    table = registry.find_duals()
    for op in ["Gemm", "MatMul", "Conv", "BatchNormalization", "Add", "Sub", "Mul", "Div", "Flatten", "Reshape",
               "Transpose", "AveragePool", "Pad", "Dropout", "Constant", "Relu", "Clip"]:
        entry = table[registry.OpKey("", op)]
        assert entry.distribution == "onnxdual"
        assert isinstance(entry.entry_point, metadata.EntryPoint)
    # every built-in is declared in our own package metadata, exactly like a plugin
    declared = {ep.name for ep in metadata.distribution("onnxdual").entry_points if ep.group == registry.GROUP}
    assert {"Relu", "Gemm", "Conv"} <= declared


def test_third_party_adds_an_operator_and_overrides_a_builtin():
    pytest.importorskip("onnxdual_testplugin", reason="the test plugin (tests/plugin_fixture) is not installed")
    import onnxdual_testplugin

    assert registry.lookup("Abs").distribution == "onnxdual-testplugin"
    assert registry.lookup("Identity").distribution == "onnxdual-testplugin"
    model = make_model([helper.make_node("Identity", ["input"], ["h"]), helper.make_node("Abs", ["h"], ["output"])],
                       [3], [3])
    before = onnxdual_testplugin.BUILT["identity"]
    net = onnxdual.load(model)
    x = torch.tensor([[-1.0, 0.1, 2.0]])
    lb = onnxdual.DualNetwork(net, x, 0.2).lower_bound(torch.eye(3).unsqueeze(0))
    assert onnxdual_testplugin.BUILT["identity"] == before + 1
    assert torch.allclose(lb[0, [0, 2]], torch.tensor([0.8, 1.8]))  # stable units are exact
    assert lb[0, 1] <= 0.0


def test_allow_list_restores_the_builtin(monkeypatch):
    monkeypatch.setenv(registry.ALLOW_LIST_ENV, "some-other-dist")
    assert registry.lookup("Identity").distribution == "onnxdual"
    assert registry.lookup("Abs") is None


def test_conflicting_plugins_are_an_error(monkeypatch):
    ep = metadata.EntryPoint("Relu", "x:y", registry.GROUP)

    class FakeDist:
        def __init__(self, name):
            self.metadata = {"Name": name}
            self.version = "1"
            self.entry_points = [ep]

    monkeypatch.setattr(registry.metadata, "distributions", lambda: [FakeDist("a-plugin"), FakeDist("b-plugin")])
    with pytest.raises(PluginLoadError, match="several plugins provide a dual layer for Relu"):
        registry.find_duals()


def test_broken_plugin_reports_its_distribution(monkeypatch):
    ep = metadata.EntryPoint("Relu", "no_such_module_xyz:factory", registry.GROUP)

    class FakeDist:
        metadata = {"Name": "broken-plugin"}
        version = "9"
        entry_points = [ep]

    monkeypatch.setattr(registry.metadata, "distributions", lambda: [FakeDist()])
    with pytest.raises(PluginLoadError, match="broken-plugin"):
        registry.lookup("Relu").load()


def test_custom_domain_keys():
    assert registry.OpKey.parse("com.example::Gelu") == registry.OpKey("com.example", "Gelu")
    assert str(registry.OpKey("com.example", "Gelu")) == "com.example::Gelu"


def test_unsupported_ops_are_listed_all_at_once():
    w = np.ones((3, 3), dtype=np.float32)
    nodes = [helper.make_node("MatMul", ["input", "W"], ["a"], name="mm"),
             helper.make_node("Softmax", ["a"], ["b"], name="soft1"),
             helper.make_node("Exp", ["b"], ["c"], name="exp1"),
             helper.make_node("Softmax", ["c"], ["output"], name="soft2")]
    with pytest.raises(onnxdual.UnsupportedOpsError) as err:
        onnxdual.load(make_model(nodes, [3], [3], {"W": w}))
    message = str(err.value)
    assert "Softmax (opset 17; node 'soft1', 'soft2')" in message and "Exp (opset 17; node 'exp1')" in message
    assert "plugin" in message and "\n" not in message
    assert {m.op_type for m in err.value.missing} == {"Softmax", "Exp"}
