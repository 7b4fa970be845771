"""Reading ONNX: file bytes (plain or gzip), parsing and checking a model with clear
:class:`~onnxdual.errors.ModelLoadError` messages, and the facts about a graph other rooms ask for (its
inputs, the nodes that depend on them, its interface)."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import onnx

from onnxdual.errors import ModelLoadError


def read_model_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an ONNX file, decompressed when it is gzip-compressed (``.onnx.gz``)."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model file not found: {p}")
    if p.is_dir():
        raise ModelLoadError(f"model path is a directory, not an ONNX file: {p}")
    try:
        data = p.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ModelLoadError(f"cannot read {p}: {getattr(exc, 'strerror', None) or exc}") from None
    return data


def parse_model(data: bytes, source: str, *, detail: bool = True) -> onnx.ModelProto:
    """Parse and check serialised ONNX. ``detail`` adds the parser's first message line to the error for
    undecodable bytes (``onnxdual verify`` reports only the exception type)."""
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and friends
        if not detail:
            raise ModelLoadError(f"cannot read {source} as an ONNX model ({type(exc).__name__})") from None
        raise ModelLoadError(f"cannot read {source} as an ONNX model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'corrupt file'})") from exc
    if not model.graph.node:
        raise ModelLoadError(f"{source} holds no ONNX graph (is it an ONNX file?)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - reported as a load error
        raise ModelLoadError(f"{source} is not a valid ONNX model: {str(exc).splitlines()[0]}") from exc
    return model


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check an ONNX file (``.onnx`` or gzip-compressed); a clear :class:`ModelLoadError` for
    anything unreadable."""
    return parse_model(read_model_bytes(path), str(Path(path)))


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy (rewrites must not change the caller's model)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def graph_inputs(model: onnx.ModelProto) -> list[str]:
    """Names of the graph inputs that are not initializers (the network's real inputs)."""
    initializers = {t.name for t in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name not in initializers]


def variable_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes whose output depends on a graph input (the rest is constant and needs no dual layer)."""
    variable = set(graph_inputs(model))
    out = []
    for node in model.graph.node:
        if any(name in variable for name in node.input if name):
            out.append(node)
            variable.update(o for o in node.output if o)
    return out


def type_name(elem_type: int) -> str:
    """ONNX element type name in lower case (``float``, ``double``, ...)."""
    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type{elem_type}"


@dataclass(frozen=True)
class Interface:
    """A model's inputs and outputs as the verifier sees them. ``input_shape`` has symbolic or unknown
    dimensions set to 1; the name and types are those of the first real input and the first output."""

    n_inputs: int
    n_outputs: int
    input_name: str
    input_shape: tuple[int, ...]
    input_type: str
    output_type: str


def interface(model: onnx.ModelProto) -> Interface:
    """The model's :class:`Interface` (the graph must have at least one real input and one output)."""
    inputs = graph_inputs(model)
    if not inputs or not model.graph.output:
        return Interface(len(inputs), len(model.graph.output), inputs[0] if inputs else "", (), "", "")
    in_info = next(v for v in model.graph.input if v.name == inputs[0])
    dims = in_info.type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in dims)
    return Interface(len(inputs), len(model.graph.output), inputs[0], shape,
                     type_name(in_info.type.tensor_type.elem_type),
                     type_name(model.graph.output[0].type.tensor_type.elem_type))
