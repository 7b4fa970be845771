"""ONNX -> torch through onnx2torch, with the fixes real files need.

* Old operator versions onnx2torch has no converter for (Flatten-1, Dropout-7, Slice-1 appear in VNN-COMP
  files) are handled by upgrading the model with ONNX's own version converter and converting again.
* Reshape targets that hard-code a batch of 1 are rewritten to copy the batch dimension (``0``), so every
  loaded network takes any batch size.
* Before converting, the whole graph is checked against the dual-layer registry and *every* operator
  without a dual layer is reported at once (:class:`~onnxdual.errors.UnsupportedOpsError`).
"""

from __future__ import annotations

import gzip
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from torch import fx

from onnxdual import registry
from onnxdual._torchvision_compat import ensure_torchvision_importable
from onnxdual.errors import MissingOp, ModelLoadError, UnsupportedOpsError

#: the opset the version converter upgrades old models to (the oldest onnx2torch covers completely)
UPGRADE_OPSET = 13


@dataclass(frozen=True)
class OnnxNodeInfo:
    """What the dual-layer factories learn about the ONNX node behind an fx module."""

    name: str
    op_type: str
    domain: str
    opset: int
    attributes: dict[str, Any] = field(default_factory=dict)


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


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check an ONNX file (``.onnx`` or gzip-compressed); a clear :class:`ModelLoadError` for
    anything unreadable."""
    p = Path(path)
    data = read_model_bytes(p)
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelLoadError(f"cannot read {p} as an ONNX model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'corrupt file'})") from exc
    if not model.graph.node:
        raise ModelLoadError(f"{p} holds no ONNX graph (is it an ONNX file?)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelLoadError(f"{p} is not a valid ONNX model: {str(exc).splitlines()[0]}") from exc
    return model


def graph_inputs(model: onnx.ModelProto) -> list[str]:
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


def opset_of(model: onnx.ModelProto, domain: str) -> int:
    for imp in model.opset_import:
        if imp.domain in (domain, "ai.onnx" if domain == "" else domain):
            return imp.version
    return 0


def missing_duals(model: onnx.ModelProto) -> list[MissingOp]:
    """Every variable node whose operator has no registered dual layer."""
    missing = []
    for i, node in enumerate(variable_nodes(model)):
        if registry.lookup(node.op_type, node.domain) is None:
            missing.append(MissingOp(node.op_type, node.domain, opset_of(model, node.domain),
                                     node.name or f"#{i} ({node.op_type})"))
    return missing


def _free_batch_in_reshapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite constant Reshape targets ``[1, ...]`` to ``[0, ...]`` (copy the batch dimension)."""
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = attr.t
    variable = {o for n in variable_nodes(model) for o in n.output} | set(graph_inputs(model))
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[0] not in variable:
            continue
        tensor = constants.get(node.input[1])
        if tensor is None:
            continue
        shape = numpy_helper.to_array(tensor).copy()
        if shape.ndim == 1 and shape.size and shape[0] == 1:
            shape[0] = 0
            new_name = f"{node.input[1]}__onnxdual_free_batch_{node.name or id(node)}"
            model.graph.initializer.append(numpy_helper.from_array(shape.astype(np.int64), new_name))
            node.input[1] = new_name
    return model


def _fill_optional_clip_min(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx2torch rejects ``Clip(x, "", max)`` (an omitted optional min); -inf is the same operator."""
    for node in model.graph.node:
        if node.op_type == "Clip" and len(node.input) >= 3 and node.input[1] == "":
            name = f"__onnxdual_clip_min_{node.name or id(node)}"
            model.graph.initializer.append(numpy_helper.from_array(np.array(-np.inf, dtype=np.float32), name))
            node.input[1] = name
    return model


def _convert(model: onnx.ModelProto) -> fx.GraphModule:
    ensure_torchvision_importable()
    import onnx2torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return onnx2torch.convert(model)


def _node_infos(model: onnx.ModelProto) -> dict[str, OnnxNodeInfo]:
    """Map onnx2torch's unique module names back to the ONNX nodes (same naming rule, same order)."""
    from onnx2torch.onnx_graph import OnnxGraph

    infos = {}
    for unique_name, node in OnnxGraph(model.graph).nodes.items():
        proto = node.proto
        attributes = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        infos[unique_name] = OnnxNodeInfo(proto.name or unique_name, proto.op_type, proto.domain,
                                          opset_of(model, proto.domain), attributes)
    return infos


_AUTO_PAD_OPS = ("Conv", "AveragePool", "MaxPool")


def _explicit_pads(model: onnx.ModelProto) -> onnx.ModelProto:
    """``auto_pad`` (``SAME_UPPER``, ``SAME_LOWER``, ``VALID``) of ``Conv``, ``AveragePool`` and ``MaxPool``
    written as explicit ``pads`` (onnx2torch implements only the latter), from the inferred input shapes."""
    nodes = [n for n in model.graph.node if n.op_type in _AUTO_PAD_OPS and any(
        a.name == "auto_pad" and helper.get_attribute_value(a) not in (b"NOTSET", "NOTSET")
        for a in n.attribute)]
    if not nodes:
        return model
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - best effort
        return model
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    inits = {t.name: t for t in model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if node.op_type not in _AUTO_PAD_OPS:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode == "NOTSET":
            continue
        in_shape = shapes.get(node.input[0])
        kernel = attrs.get("kernel_shape")
        if kernel is None and node.op_type == "Conv" and node.input[1] in inits:
            kernel = list(inits[node.input[1]].dims[2:])
        if not in_shape or kernel is None or any(d <= 0 for d in in_shape[2:]):
            continue
        spatial = in_shape[2:]
        strides = attrs.get("strides", [1] * len(spatial))
        dilations = attrs.get("dilations", [1] * len(spatial))
        begins, ends = [], []
        for size, k, st, dl in zip(spatial, kernel, strides, dilations):
            total = 0 if mode == "VALID" else max((-(-size // st) - 1) * st + (k - 1) * dl + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begins.append(small if mode != "SAME_LOWER" else large)
            ends.append(large if mode != "SAME_LOWER" else small)
        for a in list(node.attribute):
            if a.name in ("auto_pad", "pads"):
                node.attribute.remove(a)
        node.attribute.append(helper.make_attribute("pads", begins + ends))
    return out


def load(path: str | os.PathLike | onnx.ModelProto) -> fx.GraphModule:
    """Load an ONNX network as a torch module whose output equals onnxruntime's (float32).

    Raises :class:`ModelLoadError` for unreadable files and :class:`UnsupportedOpsError` listing every
    operator without a dual layer. The returned module carries the ONNX node information the dual
    network needs (``module.onnxdual_nodes``)."""
    if isinstance(path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(path)  # the fixes below must not change the caller's model
    else:
        model = read_model(path)
    source = "<model>" if isinstance(path, onnx.ModelProto) else str(path)
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise ModelLoadError(f"{source}: the network must have exactly one input, it has {len(inputs)}")
    missing = missing_duals(model)
    if missing:
        raise UnsupportedOpsError(missing)
    model = _explicit_pads(_fill_optional_clip_min(_free_batch_in_reshapes(model)))
    try:
        module = _convert(model)
    except NotImplementedError as first:
        if opset_of(model, "") >= UPGRADE_OPSET:
            raise ModelLoadError(f"{source}: onnx2torch cannot convert it: {first}") from first
        try:
            model = onnx.version_converter.convert_version(model, UPGRADE_OPSET)
            module = _convert(model)
        except Exception as exc:
            raise ModelLoadError(f"{source}: cannot convert opset {opset_of(model, '')} model "
                                 f"({first}); upgrading to opset {UPGRADE_OPSET} failed too: {exc}") from exc
    except Exception as exc:
        raise ModelLoadError(f"{source}: onnx2torch cannot convert it: {type(exc).__name__}: {exc}") from exc
    module.onnxdual_nodes = _node_infos(model)
    module.onnxdual_input_name = inputs[0]
    module.eval()
    return module
