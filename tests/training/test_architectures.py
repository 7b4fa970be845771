import numpy as np
import onnxruntime as ort
import pytest
import torch

import onnxdual
from onnxdual.training.architectures import build_architecture, export_onnx


@pytest.mark.parametrize("name", ["small", "large", "resnet", "wide:2", "deep:2"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_builds_and_exports_with_onnxruntime_parity(tmp_path, name, shape):
    torch.manual_seed(0)
    model = build_architecture(name, shape, normalize=((0.5,) * shape[0], (0.25,) * shape[0]))
    x = torch.rand(3, *shape)
    assert model(x).shape == (3, 10)
    path = export_onnx(model, shape, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(out, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert onnxdual.load(path)(x).shape == (3, 10)


def test_small_matches_the_reference_parameter_count(shared):
    import onnx
    ref = onnx.load(str(shared("reference", "models", "mnist_small.onnx")))
    n_ref = sum(int(np.prod(t.dims)) for t in ref.graph.initializer)
    n = sum(p.numel() for p in build_architecture("small", (1, 28, 28)).parameters())
    assert n == n_ref


@pytest.mark.parametrize("name", ["huge", "wide:x", "deep:0"])
def test_bad_names(name):
    with pytest.raises(onnxdual.InvalidInputError):
        build_architecture(name, (1, 28, 28))
