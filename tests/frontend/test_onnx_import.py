"""ONNX import: parity with onnxruntime on real networks, old opsets, clear errors."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import onnxdual
from onnxdual.frontend.onnx_import import missing_duals
from tests.conftest import SHARED

VNNCOMP = SHARED / "benchmarks" / "vnncomp"
NETWORKS = sorted(p.relative_to(VNNCOMP).as_posix() for p in VNNCOMP.glob("*/onnx/*.onnx")) or ["<no shared>"]


def _ort_run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _input_shape(model):
    inits = {t.name for t in model.graph.initializer}
    value = next(v for v in model.graph.input if v.name not in inits)
    return [d.dim_value if d.dim_value > 0 else 1 for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", NETWORKS)
def test_vnncomp_network_loads_and_matches_onnxruntime_or_names_missing_ops(shared, name):
    path = shared("benchmarks", "vnncomp", name)
    model = onnx.load(str(path))
    missing = {m.op_type for m in missing_duals(model)}  # after constant folding, as load sees the graph
    if missing:
        with pytest.raises(onnxdual.UnsupportedOpsError) as err:
            onnxdual.load(path)
        assert {m.op_type for m in err.value.missing} == missing
        assert all(op in str(err.value) for op in missing)
        return
    net = onnxdual.load(path)
    shape = _input_shape(model)
    x = np.random.default_rng(0).uniform(-1, 1, size=shape).astype(np.float32)
    expected = _ort_run(path, x)
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("name", ["mnist_small", "mnist_large", "mnist_resnet", "cifar_small", "mnist_fc_256x6"])
def test_reference_models_match_onnxruntime_with_free_batch(shared, name):
    path = shared("reference", "models", f"{name}.onnx")
    net = onnxdual.load(path)
    shape = [3, 32, 32] if name.startswith("cifar") else [1, 28, 28]
    x = np.random.default_rng(1).uniform(0, 1, size=[5, *shape]).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), _ort_run(path, x), rtol=1e-5, atol=1e-5)


def test_old_opset_flatten_is_upgraded(shared):
    net = onnxdual.load(shared("benchmarks", "vnncomp", "acasxu_2021", "onnx", "ACASXU_run2a_1_1_batch_2000.onnx"))
    assert net(torch.zeros(3, 1, 1, 5)).shape == (3, 5)


def test_missing_file(tmp_path):
    with pytest.raises(onnxdual.ModelLoadError, match="not found"):
        onnxdual.load(tmp_path / "nope.onnx")


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(onnxdual.ModelLoadError, match="cannot read|no ONNX graph|not a valid"):
        onnxdual.load(bad)


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(onnxdual.ModelLoadError, match="directory"):
        onnxdual.load(tmp_path)


def test_load_does_not_modify_the_callers_model(onnx_model):
    from onnx import helper
    model = onnx_model([helper.make_node("Reshape", ["input", "S"], ["output"])], [2, 3], [6],
                       {"S": np.array([1, 6], dtype=np.int64)})
    before = model.SerializeToString()
    onnxdual.load(model)
    assert model.SerializeToString() == before
