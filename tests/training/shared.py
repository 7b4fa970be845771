"""Shared pieces of the training tests: a tiny conv model exported to ONNX and synthetic data."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from onnxdual.training import ArrayData

SHAPE = (1, 8, 8)


def export(module: nn.Module, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, *SHAPE), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def synthetic(n: int = 120, seed: int = 0) -> ArrayData:
    """Two-class 8x8 images (bright vs dark) with 10 output classes, pixels in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (0.25 + 0.5 * y.view(-1, 1, 1, 1) + 0.25 * (torch.rand(n, *SHAPE, generator=g) - 0.5)).clamp(0, 1)
    return ArrayData(x, y, "synthetic", 10)
