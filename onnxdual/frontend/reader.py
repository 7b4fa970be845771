"""Reading ONNX: file bytes (plain or gzip), external tensor data (inside the model's folder only),
parsing and checking a model with clear :class:`~onnxdual.errors.ModelLoadError` messages, and the facts
about a graph other rooms ask for (its inputs, the nodes that depend on them, its interface)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx

from onnxdual.errors import ModelLoadError
from onnxdual.inputfiles import contained, read_bytes


def read_model_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an ONNX file, decompressed when it is gzip-compressed (``.onnx.gz``; the decompressed
    size is capped, see :mod:`onnxdual.inputfiles`). Only regular files are read."""
    return read_bytes(path, "model file", ModelLoadError)


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every tensor of ``model`` (initializers, sparse initializers, node attributes, subgraphs) whose data
    lives in an external file (walked with a stack: subgraphs nest)."""
    found = []
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        tensors = list(graph.initializer)
        for sparse in graph.sparse_initializer:
            tensors += [sparse.values, sparse.indices]
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
                tensors.extend(attr.tensors)
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
        found += [t for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]
    return found


def _load_external_data(model: onnx.ModelProto, base_dir: Path | None, source: str) -> bool:
    """Read every external tensor's data into the model (which then stands alone). Locations are resolved
    against ``base_dir``, the model file's folder (never the current directory), and must stay inside it;
    without a folder (a model given as bytes) external data is refused. Returns whether there was any."""
    tensors = _external_tensors(model)
    if not tensors:
        return False
    if base_dir is None:
        raise ModelLoadError(f"{source} keeps tensor data in external files, which only a model read from "
                             "its file can use")
    for tensor in tensors:
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        what = f"{source}: external data of tensor {tensor.name!r}"
        try:
            offset = int(info.get("offset") or 0)
            length = int(info["length"]) if info.get("length") else None
        except ValueError:
            raise ModelLoadError(f"{what}: offset/length are not integers") from None
        if offset < 0 or (length is not None and length < 0):
            raise ModelLoadError(f"{what}: negative offset or length")
        file = contained(base_dir, location, what + " file", ModelLoadError)
        data = read_bytes(file, what + " file", ModelLoadError, gunzip=False)
        end = len(data) if length is None else offset + length
        if end > len(data):
            raise ModelLoadError(f"{what}: {location} holds {len(data)} bytes, the tensor needs "
                                 f"{offset}..{end}")
        tensor.raw_data = data[offset:end]
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    return True


def parse_model(data: bytes, source: str, *, detail: bool = True,
                base_dir: str | os.PathLike | None = None) -> onnx.ModelProto:
    """Parse and check serialised ONNX. ``detail`` adds the parser's first message line to the error for
    undecodable bytes (``onnxdual verify`` reports only the exception type). External tensor data is read
    from ``base_dir`` (the model file's folder) and kept in the returned model; without ``base_dir`` a
    model with external data is refused."""
    return _parse(data, source, detail, base_dir)[0]


def _parse(data: bytes, source: str, detail: bool,
           base_dir: str | os.PathLike | None) -> tuple[onnx.ModelProto, bool]:
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and friends
        if not detail:
            raise ModelLoadError(f"cannot read {source} as an ONNX model ({type(exc).__name__})") from None
        raise ModelLoadError(f"cannot read {source} as an ONNX model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'corrupt file'})") from exc
    if not model.graph.node:
        raise ModelLoadError(f"{source} holds no ONNX graph (is it an ONNX file?)")
    external = _load_external_data(model, None if base_dir is None else Path(base_dir), source)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - reported as a load error
        raise ModelLoadError(f"{source} is not a valid ONNX model: {str(exc).splitlines()[0]}") from exc
    return model, external


def read_model_and_bytes(path: str | os.PathLike, *, detail: bool = True) -> tuple[onnx.ModelProto, bytes]:
    """Read and check an ONNX file; returns the model and its serialised form, both standing alone
    (external tensor data, resolved inside the model file's folder, is included)."""
    data = read_model_bytes(path)
    model, external = _parse(data, str(Path(path)), detail, Path(path).parent)
    return model, (model.SerializeToString() if external else data)


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check an ONNX file (``.onnx`` or gzip-compressed); a clear :class:`ModelLoadError` for
    anything unreadable. External tensor data is read from the model file's folder (only)."""
    return parse_model(read_model_bytes(path), str(Path(path)), base_dir=Path(path).parent)


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
