"""Today's exporters with torch's default settings: the dynamo exporter (torch's default) and the legacy
TorchScript one, opsets 13 to 21, for an MLP, a CNN with batch normalisation, a residual block and the
paper's ``x.view(x.size(0), -1)`` flatten. Each export loads, matches onnxruntime, follows the batch size
and gets a dual network."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import onnxdual
from tests.onnx_builders import run_ort

pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (the test extra)")

OPSETS = list(range(13, 22))


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        return self.layers(x)


class CnnBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        return self.fc(torch.relu(h + self.conv2(h)).flatten(1))


class ViewFlatten(nn.Module):
    """The paper's models flatten with ``x.view(x.size(0), -1)`` (Shape -> Gather -> Concat -> Reshape)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.view(h.size(0), -1))


class AllFour(nn.Module):
    """The four models side by side (one dynamo export per opset covers all of them)."""

    def __init__(self):
        super().__init__()
        self.parts = nn.ModuleList([Mlp(), CnnBatchNorm(), Residual(), ViewFlatten()])

    def forward(self, x):
        return sum(part(x) for part in self.parts)


MODELS = {"mlp": Mlp, "cnn_bn": CnnBatchNorm, "residual": Residual, "view": ViewFlatten, "all_four": AllFour}


def _module(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = MODELS[name]()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _export(model: nn.Module, x: torch.Tensor, dynamo: bool, **options) -> onnx.ModelProto:
    """``torch.onnx.export`` with its defaults (dynamo is torch's default; ``options`` add the opset or
    axes), quietly."""
    f = io.BytesIO()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            if dynamo:
                torch.onnx.export(model, (x,), f, **options)
            else:
                torch.onnx.export(model, (x,), f, dynamo=False, **options)
        finally:
            logging.disable(logging.NOTSET)
    return onnx.load_from_string(f.getvalue())


def _check(model: nn.Module, exported: onnx.ModelProto, x: torch.Tensor) -> None:
    net = onnxdual.load(exported)
    with torch.no_grad():
        got = net(x).numpy()
        np.testing.assert_allclose(got, run_ort(exported, x.numpy()), rtol=1e-5, atol=1e-5)
        other = torch.rand(5, *x.shape[1:], generator=torch.Generator().manual_seed(1))  # another batch size
        np.testing.assert_allclose(net(other).numpy(), model(other).numpy(), rtol=1e-4, atol=1e-5)
    dual = onnxdual.DualNetwork(net, x, 0.01)
    lb = dual.lower_bound(torch.eye(3).expand(x.shape[0], 3, 3))
    with torch.no_grad():
        assert (lb <= model(x) + 1e-5).all()


X = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "residual", "view"])
@pytest.mark.parametrize("opset", OPSETS)
def test_legacy_exporter_defaults(name, opset, one_thread):
    model = _module(name)
    _check(model, _export(model, X, dynamo=False, opset_version=opset), X)


@pytest.mark.parametrize("opset", OPSETS)
def test_legacy_exporter_dynamic_batch_view_flatten(opset, one_thread):
    """A free batch axis turns ``x.size(0)`` into shape arithmetic that constant folding removes."""
    model = _module("view")
    exported = _export(model, X, dynamo=False, opset_version=opset, input_names=["x"],
                       dynamic_axes={"x": {0: "batch"}})
    assert "Shape" in {n.op_type for n in exported.graph.node}
    _check(model, exported, X)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "residual", "view"])
def test_dynamo_exporter_defaults(name, one_thread):
    model = _module(name)
    _check(model, _export(model, X, dynamo=True), X)


@pytest.mark.slow
@pytest.mark.parametrize("opset", OPSETS)
def test_dynamo_exporter_opsets(opset, one_thread):
    """Reshape-19/21 (no onnx2torch converter) and ``allowzero = 1`` (written on every Reshape), for the four
    models at once."""
    model = _module("all_four")
    _check(model, _export(model, X, dynamo=True, opset_version=opset), X)


class UNetBlock(nn.Module):
    """Down, up (ConvTranspose and nearest/bilinear Resize), Concat skip, channel slicing (Split / Slice),
    a mean over space (ReduceMean), Unsqueeze/Squeeze and a Gather of one channel."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)
        self.fc = nn.Linear(7, 3)

    def forward(self, x):
        h = torch.relu(self.down(x))
        a, b = torch.chunk(h, 2, dim=1)
        up = torch.cat([self.up(h), nn.functional.interpolate(a, scale_factor=2.0, mode="nearest"),
                        nn.functional.interpolate(b, scale_factor=2.0, mode="bilinear"), x], dim=1)
        pooled = up.mean(dim=(2, 3))                      # (N, 7)
        first = up[:, 0].unsqueeze(1).sum(dim=(2, 3))     # Gather, Unsqueeze, ReduceSum: (N, 1)
        return self.fc(pooled) + first


@pytest.mark.parametrize("opset", [13, 17, 19])
def test_structural_operators_of_a_real_export_legacy(dual_check, opset, one_thread):
    model = _module_of(UNetBlock)
    exported = _export(model, X, dynamo=False, opset_version=opset, input_names=["x"],
                       dynamic_axes={"x": {0: "batch"}})
    dual_check(exported, X.numpy(), eps=0.05, samples=256)


@pytest.mark.slow
def test_structural_operators_of_a_real_export_dynamo(dual_check, one_thread):
    model = _module_of(UNetBlock)
    dual_check(_export(model, X, dynamo=True), X.numpy(), eps=0.05, samples=256)


def _module_of(cls) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


class ClassToken(nn.Module):
    """A vision-transformer stem: patches, a learnt class token expanded to the batch and concatenated in
    front (Shape -> ConstantOfShape -> Expand -> Concat in the legacy export), a position embedding."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(1, 4, 2, stride=2)
        self.cls = nn.Parameter(torch.randn(1, 1, 4))
        self.pos = nn.Parameter(torch.randn(1, 5, 4))
        self.fc = nn.Linear(20, 3)

    def forward(self, x):
        h = self.patch(x).flatten(2).transpose(1, 2)  # (N, 4, 4)
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), h], dim=1) + self.pos
        return self.fc(torch.relu(h).flatten(1))


@pytest.mark.parametrize("opset", [13, 17])
def test_a_class_token_expanded_to_the_batch_folds(dual_check, opset, one_thread):
    model = _module_of(ClassToken)
    exported = _export(model, X, dynamo=False, opset_version=opset, input_names=["x"],
                       dynamic_axes={"x": {0: "batch"}})
    assert "ConstantOfShape" in {n.op_type for n in exported.graph.node} or "Expand" in {
        n.op_type for n in exported.graph.node}
    dual_check(exported, X.numpy(), eps=0.05, samples=256)
    _check(model, exported, X)
