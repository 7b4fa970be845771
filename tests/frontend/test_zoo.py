"""A zoo of small real exports, made here with ``torch.onnx.export`` from modules written in this file (no
downloads): a residual CNN with Concat skips, a MobileNet-like block (depthwise conv, HardSwish,
squeeze-excitation Sigmoid x Mul), a U-Net-like block (ConvTranspose and Resize, Concat), a tiny transformer
block (attention with Softmax and MatMul of two variables, GELU MLP, no LayerNorm), gates written with
``torch.where`` (comparisons, Where, a constant mask). Each loads, matches
onnxruntime, and its certified bounds (every relaxation) lie below PGD and sampling."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import onnxdual
from onnxdual.duals.multi import PackDual
from onnxdual.engine.build import build_dual
from tests.onnx_builders import run_ort
from tests.oracles.attacks import pgd_minimize, sample_minimize


class ResidualConcat(nn.Module):
    """Two conv stages whose outputs are concatenated with their inputs (DenseNet-style skips) plus a sum
    skip, then a linear head."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, padding=1)
        self.c2 = nn.Conv2d(5, 3, 3, padding=1, stride=2)
        self.skip = nn.Conv2d(5, 3, 1, stride=2)
        self.fc = nn.Linear(3 * 3 * 3, 3)

    def forward(self, x):
        h = torch.cat([x, torch.relu(self.c1(x))], 1)
        h = torch.relu(self.c2(h)) + self.skip(h)
        return self.fc(h.flatten(1))


class MobileBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise 3x3, HardSwish, squeeze-excitation (global pool, two 1x1s,
    Sigmoid, multiplied back), 1x1 project, residual."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(2, 6, 1)
        self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.se1, self.se2 = nn.Conv2d(6, 2, 1), nn.Conv2d(2, 6, 1)
        self.project = nn.Conv2d(6, 2, 1)
        self.fc = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x):
        h = nn.functional.hardswish(self.depthwise(nn.functional.hardswish(self.expand(x))))
        s = torch.sigmoid(self.se2(torch.relu(self.se1(h.mean((2, 3), keepdim=True)))))
        return self.fc((x + self.project(h * s)).flatten(1))


class UNetBlock(nn.Module):
    """Down (strided conv), up by ConvTranspose and by nearest Resize, both concatenated with the skip."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(1, 3, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(3, 2, 2, stride=2)
        self.mix = nn.Conv2d(1 + 2 + 3, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x):
        d = torch.relu(self.down(x))
        u = torch.cat([x, self.up(d), nn.functional.interpolate(d, scale_factor=2.0, mode="nearest")], 1)
        return self.fc(torch.relu(self.mix(u)).flatten(1))


class TinyTransformer(nn.Module):
    """One LayerNorm-free block on (tokens, dim): single-head attention (Softmax, MatMul of two variables)
    with a residual, then a GELU MLP with a residual, mean over tokens, a linear head."""

    def __init__(self, dim: int = 4):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 3)
        self.scale = dim ** -0.5

    def forward(self, x):
        attn = torch.softmax((self.q(x) @ self.k(x).transpose(1, 2)) * self.scale, -1)
        h = x + attn @ self.v(x)
        h = h + self.mlp(h)
        return self.head(h.mean(1))


class WhereGates(nn.Module):
    """Gates written with torch.where: a leaky rectifier (Greater, Mul, Where), a dead zone that zeroes small
    values (Abs, Less, zeros_like), and a fixed mask (a constant condition) before the head."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(6, 8), nn.Linear(8, 3)
        self.register_buffer("mask", torch.tensor([True, False, True, True, False, True, True, True]))

    def forward(self, x):
        h = self.l1(x)
        h = torch.where(h > 0, h, 0.1 * h)
        h = torch.where(h.abs() < 0.05, torch.zeros_like(h), h)
        return self.l2(torch.where(self.mask, h, -h))


ZOO = [("residual_concat", ResidualConcat, (2, 6, 6), 0.02), ("mobilenet_block", MobileBlock, (2, 6, 6), 0.02),
       ("unet_block", UNetBlock, (1, 6, 6), 0.02), ("tiny_transformer", TinyTransformer, (3, 4), 0.02),
       ("where_gates", WhereGates, (6,), 0.05)]

#: operators each export must contain (so the zoo keeps testing what it claims); ``multi``: operations of
#: several variable values (squeeze-excitation's gate; attention's two MatMuls; Where) that need a multi-input
#: dual
EXPECTED = {"residual_concat": ({"Concat", "Add"}, False), "mobilenet_block": ({"Conv", "Sigmoid", "Mul"}, True),
            "unet_block": ({"ConvTranspose", "Resize", "Concat"}, False),
            "tiny_transformer": ({"Softmax", "MatMul", "Erf"}, True),
            "where_gates": ({"Greater", "Less", "Where"}, True)}


def export(module: nn.Module, shape: tuple[int, ...], opset: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(module.eval(), torch.zeros(1, *shape), buffer, dynamo=False, opset_version=opset,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("name,make,shape,eps", ZOO, ids=[z[0] for z in ZOO])
def test_zoo_export_is_certified_soundly(name, make, shape, eps, opset, soundness_seed, one_thread):
    torch.manual_seed(soundness_seed % 2**31)
    model = export(make(), shape, opset)
    ops, multi = EXPECTED[name]
    assert ops <= {n.op_type for n in model.graph.node}
    rng = np.random.default_rng(soundness_seed)
    x = rng.normal(size=(2, *shape)).astype(np.float32)
    net = onnxdual.load(model)
    xt = torch.tensor(x)
    with torch.no_grad():
        np.testing.assert_allclose(net(xt).numpy(), run_ort(model, x), rtol=1e-4, atol=1e-5)
    packs = [s for s in build_dual(net, xt).steps if isinstance(s.layer, PackDual)]
    assert bool(packs) == multi
    c = torch.tensor(rng.normal(size=(2, 3, 3)), dtype=torch.float32)
    fn = lambda pts: net(torch.tensor(pts, dtype=torch.float32)).detach().numpy()
    best = []
    for b in range(2):
        lo, hi = x[b] - eps, x[b] + eps
        attack = pgd_minimize(net, c[b].numpy(), lo, hi, steps=30, restarts=3, seed=soundness_seed)
        best.append(np.minimum(attack, sample_minimize(fn, c[b].numpy(), lo, hi, n=256, seed=soundness_seed)))
    best = np.stack(best)
    for relaxation in ("paper", "adaptive", "optimized"):
        with torch.no_grad():
            bound = onnxdual.DualNetwork(net, xt, eps, relaxation=relaxation).lower_bound(c).numpy()
        assert np.isfinite(bound).all(), f"{name} {relaxation}: non-finite bound"
        assert (bound <= best + 1e-4 * (1 + np.abs(best))).all(), f"{name} {relaxation}: {bound} above {best}"
