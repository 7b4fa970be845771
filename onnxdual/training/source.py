"""The network a run trains: a model source (an ONNX file, a built-in architecture name or a torch module)
turned into the ONNX template the run trains, how checkpoints and manifests name that source, and the checks
that a training set fits the loaded network.

The dual network is built from the ONNX graph (Theorem 1 walks the graph's layers), so training always works
on a module from :func:`onnxdual.load`: a built-in architecture or a torch module is exported to ONNX first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from onnxdual.errors import InvalidInputError
from onnxdual.frontend.export import ModelProto, export_onnx_bytes
from onnxdual.frontend.reader import parse_model, read_model
from onnxdual.training.architectures import build_architecture
from onnxdual.training.config import TrainConfig
from onnxdual.training.interfaces import TrainData

#: what :func:`onnxdual.training.train` accepts as the model to train
ModelSource = str | os.PathLike[str] | nn.Module


def is_onnx_path(source: str | os.PathLike[str]) -> bool:
    """A path object, a name ending in ``.onnx`` or an existing file (anything else names an architecture)."""
    return (isinstance(source, os.PathLike) or str(source).lower().endswith(".onnx")
            or Path(str(source)).is_file())


def describe_source(source: ModelSource) -> str:
    """A short text identifying the model source (recorded in the checkpoint)."""
    if isinstance(source, nn.Module):
        return f"module:{type(source).__name__}"
    if is_onnx_path(source):
        return f"onnx:{Path(source).name}"
    return f"arch:{source}"


def manifest_source(source: ModelSource) -> str:
    """How a cascade manifest names the model source (an absolute path for ONNX files, so a resume finds
    it)."""
    if isinstance(source, nn.Module):
        return type(source).__name__
    if is_onnx_path(source):
        return str(Path(source).resolve())
    return str(source)


def build_template(source: ModelSource, input_shape: Sequence[int], num_classes: int,
                   config: TrainConfig) -> ModelProto:
    """The ONNX graph the run trains: a given ONNX file, or a built-in architecture / torch module exported
    to ONNX (initialised with ``config.seed``)."""
    if config.normalize is not None and (isinstance(source, nn.Module) or is_onnx_path(source)):
        raise InvalidInputError("normalize builds a layer into a built-in architecture; a given model keeps "
                                "its own preprocessing")
    if not isinstance(source, nn.Module) and is_onnx_path(source):
        return read_model(source)
    if isinstance(source, nn.Module):
        module = source
    else:
        torch.manual_seed(config.seed)
        module = build_architecture(str(source), tuple(input_shape), num_classes=num_classes,
                                    normalize=config.normalize)
    return parse_model(export_onnx_bytes(module, tuple(input_shape)), "the exported ONNX graph")


def reinitialise(net: nn.Module, seed: int) -> None:
    """Fresh torch default initialisation (seeded) of every module with parameters (``reinit``)."""
    torch.manual_seed(seed)
    for module in net.modules():
        if list(module.parameters(recurse=False)) and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def check_not_empty(data: TrainData) -> None:
    """Raise :class:`InvalidInputError` for a training set without examples."""
    if data.x.dim() < 2 or data.x.shape[0] == 0:
        raise InvalidInputError("the training set is empty")


def check_data(net: nn.Module, data: TrainData) -> int:
    """Check that ``data`` fits ``net`` (inputs run, labels index its outputs); returns the output count."""
    check_not_empty(data)
    if data.y.shape[0] != data.x.shape[0]:
        raise InvalidInputError(f"{data.x.shape[0]} training inputs but {data.y.shape[0]} labels")
    with torch.no_grad():
        try:
            n_out = net(data.x[:1].to(next(net.parameters()).device)).flatten(1).shape[1]
        except Exception as exc:
            raise InvalidInputError(f"training inputs of shape {tuple(data.x.shape[1:])} do not fit the "
                                    f"model: {str(exc).splitlines()[0]}") from exc
    if (data.y < 0).any() or (data.y >= n_out).any():
        raise InvalidInputError(f"labels must lie in [0, {n_out - 1}] for a model with {n_out} outputs; "
                                f"found {int(data.y.min())}..{int(data.y.max())}")
    return n_out


__all__ = ["ModelSource", "is_onnx_path", "describe_source", "manifest_source", "build_template",
           "reinitialise", "check_not_empty", "check_data"]
