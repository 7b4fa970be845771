"""The paper's architectures (Wong et al. 2018, App. G; the models of its code release) as torch modules,
and an atomic ONNX export.

Names: ``small``, ``large``, ``resnet``, ``wide:K`` and ``deep:K``. Downsampling uses 4x4 convolutions with
stride 2, other convolutions are 3x3 without stride (App. G). ``deep:K`` is K convolutions of 8 filters
followed by K of 16 (the first of each group downsamples), then a 100-unit dense layer.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from onnxdual.errors import InvalidInputError

ARCHITECTURES = ("small", "large", "resnet", "wide:K", "deep:K")


class Normalize(nn.Module):
    """``(x - mean) / std`` inside the model, so eps stays in input units (exported as Sub and Div)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.c2(torch.relu(self.c1(x))) + x)


def _down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 4, stride=2, padding=1)


def _parse_k(name: str) -> int:
    try:
        k = int(name.split(":", 1)[1])
    except (IndexError, ValueError):
        raise InvalidInputError(f"architecture {name!r}: give a positive integer K, e.g. wide:2") from None
    if k < 1:
        raise InvalidInputError(f"architecture {name!r}: K must be at least 1")
    return k


def build_architecture(name: str, input_shape: tuple[int, int, int], num_classes: int = 10,
                       normalize: tuple | None = None) -> nn.Module:
    """A freshly initialised network ``name`` for inputs ``(C, H, W)`` (H and W divisible by 4)."""
    c, h, w = input_shape
    if h % 4 or w % 4:
        raise InvalidInputError(f"input {h}x{w}: height and width must be divisible by 4 (two stride-2 stages)")
    flat = (h // 4) * (w // 4)
    if name == "small":
        layers = [_down(c, 16), nn.ReLU(), _down(16, 32), nn.ReLU(), nn.Flatten(),
                  nn.Linear(32 * flat, 100), nn.ReLU(), nn.Linear(100, num_classes)]
    elif name == "large":
        layers = [nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), _down(32, 32), nn.ReLU(),
                  nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), _down(64, 64), nn.ReLU(), nn.Flatten(),
                  nn.Linear(64 * flat, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes)]
    elif name == "resnet":
        layers = [nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), _Residual(16), _down(16, 32), nn.ReLU(),
                  _Residual(32), _down(32, 64), nn.ReLU(), nn.Flatten(), nn.Linear(64 * flat, 100), nn.ReLU(),
                  nn.Linear(100, num_classes)]
    elif name.startswith("wide:"):
        k = _parse_k(name)
        layers = [_down(c, 4 * k), nn.ReLU(), _down(4 * k, 8 * k), nn.ReLU(), nn.Flatten(),
                  nn.Linear(8 * k * flat, 128 * k), nn.ReLU(), nn.Linear(128 * k, num_classes)]
    elif name.startswith("deep:"):
        k = _parse_k(name)
        layers = [_down(c, 8), nn.ReLU()]
        for _ in range(k - 1):
            layers += [nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()]
        layers += [_down(8, 16), nn.ReLU()]
        for _ in range(k - 1):
            layers += [nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()]
        layers += [nn.Flatten(), nn.Linear(16 * flat, 100), nn.ReLU(), nn.Linear(100, num_classes)]
    else:
        raise InvalidInputError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    if normalize is not None:
        layers.insert(0, Normalize(*normalize))
    return nn.Sequential(*layers)


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | os.PathLike, opset: int = 17) -> Path:
    """Write ``model`` as float32 ONNX with a free batch dimension (input ``input``, output ``logits``),
    atomically: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, torch.zeros(1, *input_shape), tmp, dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        os.replace(tmp, path)
    finally:
        model.train(was_training)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
