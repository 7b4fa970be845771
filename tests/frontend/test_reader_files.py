"""The frontend reads only what the user named: external tensor data inside the model's folder (from any
current directory, never a decoy there), regular files only, a bounded .onnx.gz."""

from __future__ import annotations

import gzip
import os

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxdual.errors import ModelLoadError
from onnxdual.frontend.reader import parse_model, read_model, read_model_and_bytes
from onnxdual.inputfiles import MAX_DECOMPRESSED_ENV
from tests.onnx_builders import make_model, run_ort

W = np.arange(6, dtype=np.float32).reshape(3, 2) / 10


def _linear() -> onnx.ModelProto:
    return make_model([helper.make_node("MatMul", ["input", "W"], ["output"])], [3], [2], {"W": W})


def save_external(folder, name="m.onnx", location="m.onnx.data") -> str:
    """``folder/name`` with its weight in ``folder/location`` (as torch's dynamo export writes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    onnx.save(_linear(), str(path), save_as_external_data=True, location=location, size_threshold=0)
    assert (folder / location).exists()
    return str(path)


def _weight(model: onnx.ModelProto) -> np.ndarray:
    return onnx.numpy_helper.to_array(model.graph.initializer[0])


def test_external_data_loads_from_any_directory_and_ignores_a_decoy_in_the_cwd(tmp_path, monkeypatch):
    path = save_external(tmp_path / "model")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    decoy = onnx.numpy_helper.from_array(np.full_like(W, 99.0), "W")
    (elsewhere / "m.onnx.data").write_bytes(decoy.raw_data)
    monkeypatch.chdir(elsewhere)
    model, data = read_model_and_bytes(path)
    np.testing.assert_array_equal(_weight(model), W)
    np.testing.assert_array_equal(_weight(read_model(path)), W)
    # the serialised form stands alone: onnxruntime runs it without any file next to it
    x = np.ones((1, 3), dtype=np.float32)
    np.testing.assert_allclose(run_ort(onnx.load_model_from_string(data), x), x @ W, rtol=1e-6)


def test_a_dynamo_export_with_external_data_loads(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")
    net = torch.nn.Linear(3, 2).eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3),), str(path), dynamo=True, external_data=True)
    assert (tmp_path / "m.onnx.data").exists()
    monkeypatch.chdir(tmp_path.parent)
    model = read_model(path)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/hostname", "link.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    (tmp_path / "outside.bin").write_bytes(b"\0" * 24)
    folder = tmp_path / "model"
    path = save_external(folder)
    (folder / "link.bin").symlink_to(tmp_path / "outside.bin")
    model = onnx.load(path, load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, path)
    with pytest.raises(ModelLoadError, match="leaves the folder"):
        read_model(path)


def test_external_data_without_a_folder_is_refused(tmp_path):
    model = onnx.load(save_external(tmp_path), load_external_data=False)
    with pytest.raises(ModelLoadError, match="external files"):
        parse_model(model.SerializeToString(), "<checkpoint>")


def test_external_data_too_short_or_missing_is_refused(tmp_path):
    path = save_external(tmp_path)
    (tmp_path / "m.onnx.data").write_bytes(b"\0" * 4)
    with pytest.raises(ModelLoadError, match="holds 4 bytes"):
        read_model(path)
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(ModelLoadError, match="not found"):
        read_model(path)


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_non_regular_files_are_refused_without_blocking(tmp_path, kind):
    path = {"fifo": tmp_path / "fifo", "device": "/dev/zero", "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(ModelLoadError, match="regular file|directory"):
        read_model(path)


def test_a_decompression_bomb_is_refused_with_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "bomb.onnx.gz"
    path.write_bytes(gzip.compress(b"\0" * (4 << 20)))
    monkeypatch.setenv(MAX_DECOMPRESSED_ENV, str(1 << 20))
    with pytest.raises(ModelLoadError, match=f"more than {1 << 20} bytes.*{MAX_DECOMPRESSED_ENV}"):
        read_model(path)


def test_a_gzip_model_within_the_limit_loads(tmp_path):
    path = tmp_path / "m.onnx.gz"
    path.write_bytes(gzip.compress(_linear().SerializeToString()))
    np.testing.assert_array_equal(_weight(read_model(path)), W)
