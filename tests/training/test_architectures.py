"""The paper's architectures: shapes, the exact layer layout of the reference models (same weights -> same
logits as onnxruntime on ../shared/reference/models), normalisation inside the graph, and the checked, atomic
ONNX export."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import onnxdual
from onnxdual.errors import InvalidInputError, ModelLoadError
from onnxdual.frontend.export import export_onnx
from onnxdual.training.architectures import ARCHITECTURES, build_architecture

NAMES = ["small", "large", "resnet", "wide:1", "wide:2", "deep:1", "deep:3"]
SHAPES = [(1, 28, 28), (3, 32, 32)]


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES + [(1, 4, 4), (2, 30, 18)])
def test_builds_with_the_right_output_shape(name, shape):
    model = build_architecture(name, shape, num_classes=7)
    assert isinstance(model, nn.Sequential)
    assert model(torch.rand(3, *shape)).shape == (3, 7)


@pytest.mark.parametrize("name,reference,shape", [
    ("small", "mnist_small", (1, 28, 28)), ("small", "cifar_small", (3, 32, 32)),
    ("large", "mnist_large", (1, 28, 28)), ("resnet", "mnist_resnet", (1, 28, 28)),
    ("wide:1", "mnist_wide1", (1, 28, 28)), ("wide:2", "mnist_wide2", (1, 28, 28)),
    ("wide:4", "mnist_wide4", (1, 28, 28)),
])
def test_same_layers_as_the_reference_models(shared, name, reference, shape):
    """The reference weights load by name (strict) and give onnxruntime's logits of the reference file:
    same parameters, same shapes, same wiring (incl. the residual connections)."""
    path = shared("reference", "models", f"{reference}.onnx")
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
               for t in onnx.load(str(path)).graph.initializer}
    model = build_architecture(name, shape)
    assert sum(p.numel() for p in model.parameters()) == sum(w.numel() for w in weights.values())
    model.load_state_dict(weights, strict=True)
    x = torch.load(shared("reference", "models", f"inputs_{'x'.join(map(str, shape))}.pt"))[:16]
    with torch.no_grad():
        ours = model(x).numpy()
    np.testing.assert_allclose(ours, run_onnx(path, x), rtol=1e-4, atol=1e-5)
    normalized = build_architecture(name, shape, normalize=(0.0, 1.0))  # same parameter names
    normalized.load_state_dict(weights, strict=False)
    with torch.no_grad():
        np.testing.assert_allclose(normalized(x).numpy(), ours, rtol=1e-6, atol=1e-6)


def test_deep_layout():
    """Deep(k): k convolutions of 8 filters, then k of 16; the last of each group is the 4x4 stride-2 one."""
    for k in (1, 2, 4):
        convs = [m for m in build_architecture(f"deep:{k}", (1, 28, 28)) if isinstance(m, nn.Conv2d)]
        assert [c.out_channels for c in convs] == [8] * k + [16] * k
        assert [c.stride[0] for c in convs] == ([1] * (k - 1) + [2]) * 2
        assert [c.kernel_size[0] for c in convs] == ([3] * (k - 1) + [4]) * 2
    linears = [m for m in build_architecture("deep:2", (3, 32, 32)) if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16 * 8 * 8, 100), (100, 10)]
    wide = [m for m in build_architecture("wide:3", (1, 28, 28)) if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [m.weight.shape[0] for m in wide] == [12, 24, 384, 10]


@pytest.mark.parametrize("name", ["small", "large", "resnet", "wide:2", "deep:2"])
@pytest.mark.parametrize("shape", SHAPES)
def test_export_matches_torch_in_onnxruntime(tmp_path, name, shape):
    torch.manual_seed(0)
    mean, std = (0.5,) * shape[0], tuple(0.2 + 0.1 * i for i in range(shape[0]))
    model = build_architecture(name, shape, normalize=(mean, std))
    path = export_onnx(model, shape, tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    assert [n.op_type for n in graph.node][:2] == ["Sub", "Div"]  # the normalisation is in the graph
    assert graph.input[0].name == "input" and graph.output[0].name == "logits"
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # free batch dimension
    x = torch.rand(5, *shape)
    with torch.no_grad():
        want = model(x).numpy()
    assert np.max(np.abs(run_onnx(path, x) - want)) < 1e-5
    assert np.max(np.abs(onnxdual.load(path)(x).detach().numpy() - want)) < 1e-5


def test_export_is_atomic_and_leaves_the_module_alone(tmp_path):
    model = build_architecture("small", (1, 28, 28)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "sub" / "model.onnx"
    export_onnx(model, (1, 28, 28), path)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    good = path.read_bytes()

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("cannot trace this")

    with pytest.raises(RuntimeError):
        export_onnx(Broken(), (1, 28, 28), path)

    class Lies(nn.Module):  # the traced graph differs from what the module computes
        def forward(self, x):
            return x.flatten(1)[:, :10] * (1.0 if torch.jit.is_tracing() else 2.0)

    with pytest.raises(ModelLoadError, match="disagrees"):
        export_onnx(Lies(), (1, 28, 28), path)
    assert path.read_bytes() == good  # the previous file is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no temporary files left


@pytest.mark.parametrize("name", ["huge", "wide:x", "deep:0", "wide", "wide:-2", "", "deep:1.5"])
def test_bad_names_list_the_valid_ones(name):
    with pytest.raises(InvalidInputError) as info:
        build_architecture(name, (1, 28, 28))
    assert "small, large, resnet, wide:K, deep:K" in str(info.value)
    assert ARCHITECTURES == ("small", "large", "resnet", "wide:K", "deep:K")


@pytest.mark.parametrize("kwargs,match", [
    ({"input_shape": (28, 28)}, "channels, height, width"),
    ({"input_shape": (1, 3, 28)}, "4x4"),
    ({"num_classes": 1}, "num_classes"),
    ({"normalize": ((0.1, 0.2), (0.3,))}, "normalize mean: give 1 value"),
    ({"normalize": (0.1, 0.0)}, "positive"),
    ({"normalize": 0.5}, "pair"),
])
def test_bad_arguments(kwargs, match):
    args = {"name": "small", "input_shape": (1, 28, 28), **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        build_architecture(**args)
