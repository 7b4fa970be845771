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


def test_third_party_adds_an_operator_and_overrides_a_builtin(test_plugin):
    onnxdual_testplugin = test_plugin
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
    assert registry.lookup("Abs").distribution == "onnxdual"  # the built-in again, not the plugin's


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
             helper.make_node("Asin", ["a"], ["b"], name="asin1"),
             helper.make_node("Tan", ["b"], ["c"], name="tan1"),
             helper.make_node("Asin", ["c"], ["output"], name="asin2")]
    with pytest.raises(onnxdual.UnsupportedOpsError) as err:
        onnxdual.load(make_model(nodes, [3], [3], {"W": w}))
    message = str(err.value)
    assert "Asin (opset 17; node 'asin1', 'asin2')" in message and "Tan (opset 17; node 'tan1')" in message
    assert "plugin" in message and "\n" not in message
    assert {m.op_type for m in err.value.missing} == {"Asin", "Tan"}


def test_entry_point_names_carry_an_optional_schema_version():
    assert registry.OpKey.parse("Clip") == registry.OpKey("", "Clip", registry.ALL_VERSIONS)
    assert registry.OpKey.parse("Clip@13") == registry.OpKey("", "Clip", 13)
    assert registry.OpKey.parse("ai.onnx::Clip@13") == registry.OpKey("", "Clip", 13)
    assert registry.OpKey.parse("com.example::Gelu@2") == registry.OpKey("com.example", "Gelu", 2)
    assert str(registry.OpKey("", "Clip", 13)) == "Clip@13" and str(registry.OpKey("", "Clip")) == "Clip"
    for bad in ("Clip@", "Clip@x", "Clip@0"):
        with pytest.raises(ValueError):
            registry.OpKey.parse(bad)


def test_a_versioned_plugin_name_in_metadata_is_found_and_a_malformed_one_is_a_load_error(monkeypatch):
    class FakeDist:
        def __init__(self, name, eps):
            self.metadata, self.version = {"Name": name}, "1"
            self.entry_points = [metadata.EntryPoint(n, "x:y", registry.GROUP) for n in eps]

    monkeypatch.setattr(registry.metadata, "distributions",
                        lambda: [FakeDist("onnxdual", ["Relu"]), FakeDist("a-plugin", ["Relu@14"])])
    table = registry.default()
    assert table.lookup("Relu", "", 14).distribution == "a-plugin"
    assert table.lookup("Relu", "", 13).distribution == "onnxdual"
    assert table.lookup("Relu").distribution == "onnxdual"
    registry.refresh()
    monkeypatch.setattr(registry.metadata, "distributions", lambda: [FakeDist("b-plugin", ["Relu@new"])])
    with pytest.raises(PluginLoadError, match="b-plugin"):
        registry.find_duals()


def _relu_model(opset):
    return make_model([helper.make_node("Relu", ["input"], ["output"])], [3], [3], opset=opset)


def test_an_overlay_for_one_schema_version_applies_to_that_opset_range_only():
    calls = []

    def counting_relu(ctx):
        calls.append(ctx.since_version)
        return registry.default().lookup("Relu").load()(ctx)

    overlay = registry.default().with_overrides({"Relu@14": counting_relu})
    assert registry.lookup("Relu", "", 14).distribution == "onnxdual"  # the default is untouched
    x = torch.tensor([[-1.0, 0.5, 2.0]])
    reference = onnxdual.DualNetwork(onnxdual.load(_relu_model(17)), x, 0.1).lower_bound(torch.eye(3)[None])
    for opset, expected in ((17, [14]), (13, [])):  # Relu-14 serves opsets 14.., Relu-13 opset 13
        calls.clear()
        net = onnxdual.load(_relu_model(opset), registry=overlay)
        lb = onnxdual.DualNetwork(net, x, 0.1).lower_bound(torch.eye(3)[None])  # the loading registry
        assert calls == expected
        assert torch.equal(lb, reference)


def test_an_overlay_adds_an_operator_and_the_engine_takes_the_registry_as_a_parameter():
    from onnxdual.duals.base import ElementwiseActivation
    from onnxdual.engine.build import build_dual

    def abs_dual(ctx):
        return ElementwiseActivation(ctx, fn=torch.abs, kinks=[0.0])

    model = make_model([helper.make_node("Abs", ["input"], ["output"])], [2], [2])
    overlay = registry.default().with_overrides({"Abs": abs_dual})
    if registry.lookup("Abs") is None:
        with pytest.raises(onnxdual.UnsupportedOpsError):
            onnxdual.load(model)
    net = onnxdual.load(model, registry=overlay)
    x = torch.tensor([[-1.0, 2.0]])
    built = build_dual(net, x, overlay)
    assert built.steps[0].layer.ctx.since_version == 13
    lb = onnxdual.DualNetwork(net, x, 0.5).lower_bound(torch.eye(2)[None])
    assert torch.allclose(lb, torch.tensor([[0.5, 1.5]]))


def test_a_custom_domain_without_schema_resolves_to_the_all_versions_entry():
    from onnxdual.frontend.opset import since_version

    assert since_version("Gelu", "com.example", 1) is None
    assert since_version("Clip", "", 17) == 13 and since_version("Clip", "ai.onnx", 10) == 6
    overlay = registry.default().with_overrides({"com.example::Gelu": "x:y"})
    assert overlay.lookup("Gelu", "com.example", None).target == "x:y"
    assert overlay.lookup("Gelu", "com.example", 3).target == "x:y"
    assert getattr(overlay.lookup("Gelu"), "target", None) != "x:y"  # not the default domain's Gelu


def test_the_test_plugin_is_found_from_a_temporary_dist_info_not_an_installation(test_plugin, tmp_path):
    dist = metadata.distribution("onnxdual-testplugin")  # the first on sys.path: the fixture's
    assert str(dist.locate_file("")).startswith(str(tmp_path))
