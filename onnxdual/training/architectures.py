"""The paper's architectures (Wong et al. 2018, §5 and App. G, as in its code release) as torch modules
(their atomic, checked ONNX export is :func:`onnxdual.frontend.export.export_onnx`).

Names (``build_architecture(name, (C, H, W))``); "down" is a 4x4 convolution with stride 2 and padding 1
(halves H and W, rounding down), every other convolution is 3x3 with stride 1 and padding 1; every
convolution and hidden dense layer is followed by a ReLU:

``small``
    down 16, down 32, dense 100, dense classes (Wong & Kolter 2017's network).
``large``
    conv 32, down 32, conv 64, down 64, dense 512, dense 512, dense classes.
``resnet``
    conv 16, residual block 16, down 32, residual block 32, down 64, dense 100, dense classes. A residual
    block is ``relu(conv(relu(conv(x))) + x)``. This is the reference model ``mnist_resnet``, the
    reference residual network used for the benchmarks (``MnistResnet``), for any input size and channel
    count; its parameter names (``stem``, ``b1.c1``, ``down1`` ...) are those of the reference.
``wide:K``
    down 4K, down 8K, dense 128K, dense classes (App. G: "two convolutional layers of 4 x k and 8 x k filters
    followed by a 128 x k fully connected layer").
``deep:K``
    K convolutions of 8 filters, then K of 16, then dense 100, dense classes (App. G: "k convolutional filters
    with 8 filters followed by k convolutional filters with 16 filters"). Within each group of K the *last*
    convolution is the downsampling one and the others are 3x3: ``deep:1`` = down 8, down 16;
    ``deep:3`` = conv 8, conv 8, down 8, conv 16, conv 16, down 16. This is the layout of the paper's code
    release (``model_deep`` in convex_adversarial's ``examples/problems.py``), the networks of Table 3.

``small``, ``large``, ``wide:K`` and ``deep:K`` are :class:`torch.nn.Sequential` whose layers are named
``"0"``, ``"1"``, ... exactly as a plain ``nn.Sequential`` of the same layers, so their ``state_dict`` keys
(and the ONNX initializer names) equal those of the reference models; ``normalize=(mean, std)`` prepends a
layer named ``"normalize"`` without renumbering the others.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from onnxdual.errors import InvalidInputError

__all__ = ["ARCHITECTURES", "MAX_K", "Normalize", "ResidualBlock", "build_architecture"]

ARCHITECTURES = ("small", "large", "resnet", "wide:K", "deep:K")
#: the largest K of ``wide:K`` and ``deep:K``: wide:64 has a 8192-unit dense layer, deep:64 128 convolutions
#: (the paper goes to K = 4); a larger K is a typo that would take hours or all memory to build
MAX_K = 64


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, inside the model, so eps stays in input units (exported as ONNX
    Sub and Div nodes)."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float], channels: int = 1):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        for what, t in (("mean", mean_t), ("std", std_t)):
            if t.numel() not in (1, channels):
                want = "1 value" if channels == 1 else f"1 or {channels} values (one per channel)"
                raise InvalidInputError(f"normalize {what}: give {want} for {channels} input channel(s), "
                                        f"got {t.numel()}")
            if not torch.isfinite(t).all():
                raise InvalidInputError(f"normalize {what} must be finite, got {t.tolist()}")
        if (std_t <= 0).any():
            raise InvalidInputError(f"normalize std must be positive, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t.reshape(1, -1, 1, 1))
        self.register_buffer("std", std_t.reshape(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class ResidualBlock(nn.Module):
    """``relu(c2(relu(c1(x))) + x)`` with two 3x3 convolutions that keep the channel count."""

    def __init__(self, channels: int):
        super().__init__()
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.c2(torch.relu(self.c1(x))) + x)


def _down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 4, stride=2, padding=1)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=1, padding=1)


def _valid_names() -> str:
    return ", ".join(ARCHITECTURES) + f" (K an integer from 1 to {MAX_K}, e.g. wide:4)"


def _parse_k(name: str) -> int:
    family, _, text = name.partition(":")
    try:
        k = int(text)
    except ValueError:
        raise InvalidInputError(f"architecture {name!r}: {family}:K needs a positive integer K, "
                                f"e.g. {family}:2; "
                                f"valid names: {_valid_names()}") from None
    if not 1 <= k <= MAX_K:
        raise InvalidInputError(f"architecture {name!r}: K must lie in 1..{MAX_K}; "
                                f"valid names: {_valid_names()}")
    return k


def _deep_group(cin: int, cout: int, k: int) -> list[nn.Module]:
    """k convolutions ending in the downsampling one (a single one when k = 1)."""
    if k == 1:
        return [_down(cin, cout), nn.ReLU()]
    layers: list[nn.Module] = [_conv(cin, cout), nn.ReLU()]
    for _ in range(k - 2):
        layers += [_conv(cout, cout), nn.ReLU()]
    return layers + [_down(cout, cout), nn.ReLU()]


def _check_shape(input_shape) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in input_shape)
        ok = all(int(v) == v for v in input_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidInputError(f"input shape {input_shape!r}: give (channels, height, width), "
                                "e.g. (1, 28, 28)")
    if c < 1 or h < 4 or w < 4:
        raise InvalidInputError(f"input shape {(c, h, w)}: needs at least 1 channel and 4x4 pixels "
                                "(two stride-2 stages)")
    return c, h, w


def build_architecture(name: str, input_shape: tuple[int, int, int], num_classes: int = 10,
                       normalize: tuple | None = None) -> nn.Module:
    """A freshly initialised (torch default initialisation, seeded by the caller) network ``name`` for inputs
    of shape ``(C, H, W)`` with ``num_classes`` logits.

    ``normalize=(mean, std)`` (a number or one value per channel each) prepends :class:`Normalize`, so the
    exported ONNX takes raw inputs in [0, 1] and eps is measured in those units.
    Raises :class:`InvalidInputError` for an unknown name, a bad K, shape, class count or normalisation.
    """
    if not isinstance(name, str):
        raise InvalidInputError(f"architecture name must be a string; valid names: {_valid_names()}")
    key = name.strip().lower()
    c, h, w = _check_shape(input_shape)
    try:
        ok = not isinstance(num_classes, bool) and int(num_classes) == num_classes and num_classes >= 2
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidInputError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    num_classes = int(num_classes)
    flat = (h // 2 // 2) * (w // 2 // 2)  # after two "down" stages
    named: list[tuple[str, nn.Module]] | None = None
    if key == "small":
        layers = [_down(c, 16), nn.ReLU(), _down(16, 32), nn.ReLU(), nn.Flatten(),
                  nn.Linear(32 * flat, 100), nn.ReLU(), nn.Linear(100, num_classes)]
    elif key == "large":
        layers = [_conv(c, 32), nn.ReLU(), _down(32, 32), nn.ReLU(), _conv(32, 64), nn.ReLU(),
                  _down(64, 64), nn.ReLU(), nn.Flatten(), nn.Linear(64 * flat, 512), nn.ReLU(),
                  nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes)]
    elif key == "resnet":
        named = [("stem", _conv(c, 16)), ("relu0", nn.ReLU()), ("b1", ResidualBlock(16)),
                 ("down1", _down(16, 32)), ("relu1", nn.ReLU()), ("b2", ResidualBlock(32)),
                 ("down2", _down(32, 64)), ("relu2", nn.ReLU()), ("flatten", nn.Flatten()),
                 ("fc1", nn.Linear(64 * flat, 100)), ("relu3", nn.ReLU()),
                 ("fc2", nn.Linear(100, num_classes))]
    elif key.startswith("wide:"):
        k = _parse_k(key)
        layers = [_down(c, 4 * k), nn.ReLU(), _down(4 * k, 8 * k), nn.ReLU(), nn.Flatten(),
                  nn.Linear(8 * k * flat, 128 * k), nn.ReLU(), nn.Linear(128 * k, num_classes)]
    elif key.startswith("deep:"):
        k = _parse_k(key)
        layers = _deep_group(c, 8, k) + _deep_group(8, 16, k) + [
            nn.Flatten(), nn.Linear(16 * flat, 100), nn.ReLU(), nn.Linear(100, num_classes)]
    else:
        raise InvalidInputError(f"unknown architecture {name!r}; valid names: {_valid_names()}")
    if named is None:
        named = [(str(i), m) for i, m in enumerate(layers)]
    if normalize is not None:
        try:
            mean, std = normalize
        except (TypeError, ValueError):
            raise InvalidInputError("normalize must be a pair (mean, std)") from None
        named.insert(0, ("normalize", Normalize(mean, std, channels=c)))
    return nn.Sequential(OrderedDict(named))
