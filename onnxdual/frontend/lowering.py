"""Operators written as others before conversion, where onnx2torch or the engine's graph cannot take them as
they are; each rewrite computes the same function (the ONNX definition, step by step):

* ``Split`` -> one ``Slice`` per output (the engine's graph has one output per node);
* ``SpaceToDepth`` and ``DepthToSpace`` in ``DCR`` mode -> ``Reshape``, ``Transpose``, ``Reshape``
  (onnx2torch converts neither; the reshapes copy the batch dimension, ``0``);
* negative constant ``GatherElements`` indices -> the same indices counted from the front (onnx2torch's
  module passes them to ``torch.gather``, which refuses them);
* ``Transpose(C @ Transpose(X))`` of a batch of rows ``X`` and a constant ``C`` -> ``X @ C^T`` (exporters
  write ``(W x^T)^T``; as written, two nodes move the batch axis, which no per-example dual layer can);
* ``GlobalMaxPool`` -> ``ReduceMax`` over the spatial axes with ``keepdims=1`` (onnx2torch converts no
  GlobalMaxPool; the ONNX definition is that maximum, axes ``2..rank-1``);
* ``Selu`` with a non-default ``alpha`` or ``gamma`` -> ``Mul(Elu(x, alpha), gamma)`` (onnx2torch's Selu is
  torch's, with the default constants only; ``gamma (x if x > 0 else alpha (e^x - 1))`` is that product).

A node whose sizes cannot be known (shape inference fails) is left as it is.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def lower_for_conversion(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every lowering of this module (the caller owns ``model``; returns it rewritten)."""
    return selu_parameters(global_max_pools(
        transposed_matmuls(non_negative_gather_indices(space_depth_to_reshapes(split_to_slices(model))))))


def constant_tensors(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Initializers and ``Constant`` node values (``value`` attributes) by name."""
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = attr.t
    return constants


def inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """ONNX shape inference's dimensions by value name (0 where unknown; empty when inference fails)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - best effort
        return {}
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.graph.value_info) + list(inferred.graph.input)}


def _split_sizes(node: onnx.NodeProto, attrs: dict, constants: dict, size: int | None) -> list[int] | None:
    """The output sizes of a Split node (attribute before Split-13, input from then on, else equal parts;
    ``num_outputs`` of Split-18: ceil-sized parts, the last one smaller)."""
    if "split" in attrs:
        return [int(v) for v in attrs["split"]]
    if len(node.input) > 1 and node.input[1]:
        tensor = constants.get(node.input[1])
        return None if tensor is None else [int(v) for v in numpy_helper.to_array(tensor).reshape(-1)]
    if size is None or size <= 0:
        return None
    parts = int(attrs.get("num_outputs", len(node.output)))
    if "num_outputs" in attrs:
        chunk = -(-size // parts)
        return [min(chunk, size - i * chunk) for i in range(parts)]
    return [size // parts] * parts if size % parts == 0 else None


def split_to_slices(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each ``Split`` with known sizes (constant ``split``, or a static axis) along a per-example axis as one
    ``Slice`` per output: the same values, and each node has one output (the engine's graph). ``Slice-1``
    attributes for opsets below 10, constant inputs from 10 on."""
    if not any(n.op_type == "Split" and n.domain in ("", "ai.onnx") for n in model.graph.node):
        return model
    constants = constant_tensors(model)
    shapes = inferred_shapes(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    out_nodes = []
    for node in model.graph.node:
        if node.op_type != "Split" or node.domain not in ("", "ai.onnx"):
            out_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        shape = shapes.get(node.input[0])
        axis = int(attrs.get("axis", 0))
        axis = axis + len(shape) if shape and axis < 0 else axis
        size = shape[axis] if shape and 0 <= axis < len(shape) else None
        sizes = _split_sizes(node, attrs, constants, size)
        if axis <= 0 or sizes is None or len(sizes) != len(node.output):
            out_nodes.append(node)
            continue
        start = 0
        for i, (name, length) in enumerate(zip(node.output, sizes)):
            if not name:
                start += length
                continue
            label = f"{node.name or node.output[0]}__onnxdual_split_{i}"
            if opset < 10:
                out_nodes.append(helper.make_node("Slice", [node.input[0]], [name], name=label,
                                                  starts=[start], ends=[start + length], axes=[axis]))
            else:
                inputs = []
                for part, value in (("starts", start), ("ends", start + length), ("axes", axis)):
                    model.graph.initializer.append(
                        numpy_helper.from_array(np.array([value], dtype=np.int64), f"{label}_{part}"))
                    inputs.append(f"{label}_{part}")
                out_nodes.append(helper.make_node("Slice", [node.input[0], *inputs], [name], name=label))
            start += length
    del model.graph.node[:]
    model.graph.node.extend(out_nodes)
    return model


def space_depth_to_reshapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """SpaceToDepth and DCR DepthToSpace of ``(N, C, H, W)`` tensors as the reshape-transpose-reshape of their
    ONNX definitions (CRD DepthToSpace is left to onnx2torch)."""
    def mode(node):
        value = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"), b"DCR")
        return value.decode() if isinstance(value, bytes) else value

    def lowered(n):
        return n.domain in ("", "ai.onnx") and (
            n.op_type == "SpaceToDepth" or (n.op_type == "DepthToSpace" and mode(n) == "DCR"))

    if not any(lowered(n) for n in model.graph.node):
        return model
    shapes = inferred_shapes(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    out_nodes = []
    for node in model.graph.node:
        shape = shapes.get(node.input[0]) if lowered(node) else None
        if not shape or len(shape) != 4 or min(shape[1:]) <= 0:
            out_nodes.append(node)
            continue
        b = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "blocksize")
        _, c, h, w = shape
        if node.op_type == "SpaceToDepth":
            first, perm = [0, c, h // b, b, w // b, b], [0, 3, 5, 1, 2, 4]
            last = [0, c * b * b, h // b, w // b]
        else:
            first, perm = [0, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2]
            last = [0, c // (b * b), h * b, w * b]
        label = f"{node.name or node.output[0]}__onnxdual_lowered"
        out_nodes += [_reshape(model, node.input[0], first, f"{label}_a", f"{label}_reshape1", opset),
                      helper.make_node("Transpose", [f"{label}_a"], [f"{label}_b"], perm=perm,
                                       name=f"{label}_transpose"),
                      _reshape(model, f"{label}_b", last, node.output[0], f"{label}_reshape2", opset)]
    del model.graph.node[:]
    model.graph.node.extend(out_nodes)
    return model


def _reshape(model: onnx.ModelProto, source: str, shape: list[int], output: str, name: str,
             opset: int) -> onnx.NodeProto:
    """A Reshape to a constant ``shape``: an attribute before Reshape-5, an initializer from then on."""
    if opset < 5:
        return helper.make_node("Reshape", [source], [output], name=name, shape=shape)
    model.graph.initializer.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), f"{name}_shape"))
    return helper.make_node("Reshape", [source, f"{name}_shape"], [output], name=name)


def non_negative_gather_indices(model: onnx.ModelProto) -> onnx.ModelProto:
    """``GatherElements`` with constant indices: negative ones (counted from the end of ``axis``) made
    non-negative."""
    nodes = [n for n in model.graph.node if n.op_type == "GatherElements" and len(n.input) == 2]
    constants = {t.name: t for t in model.graph.initializer}
    nodes = [n for n in nodes if n.input[1] in constants
             and (numpy_helper.to_array(constants[n.input[1]]) < 0).any()]
    if not nodes:
        return model
    shapes = inferred_shapes(model)
    for node in nodes:
        indices = numpy_helper.to_array(constants[node.input[1]])
        shape = shapes.get(node.input[0], [])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        axis = axis + len(shape) if axis < 0 else axis
        if not 0 <= axis < len(shape) or shape[axis] <= 0:
            continue
        name = f"{node.input[1]}__onnxdual_non_negative_{node.name or node.output[0]}"
        fixed = np.where(indices < 0, indices + shape[axis], indices).astype(indices.dtype)
        model.graph.initializer.append(numpy_helper.from_array(fixed, name))
        node.input[1] = name
    return model


def _is_swap(node: onnx.NodeProto) -> bool:
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    return node.op_type == "Transpose" and node.domain in ("", "ai.onnx") and perm == [1, 0]


def transposed_matmuls(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each ``Transpose[1, 0](MatMul(C, Transpose[1, 0](X)))`` with a constant 2-D ``C`` whose inner values
    feed nothing else, as ``MatMul(X, C^T)``: the same values (``(C X^T)^T = X C^T``)."""
    if not any(_is_swap(n) for n in model.graph.node):
        return model
    constants = constant_tensors(model)
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    fused: dict[int, onnx.NodeProto] = {}  # first Transpose -> the MatMul replacing the three nodes
    dropped: set[int] = set()
    for first in model.graph.node:
        inner = users.get(first.output[0], []) if _is_swap(first) else []
        if len(inner) != 1 or inner[0].op_type != "MatMul" or list(inner[0].input[1:]) != [first.output[0]]:
            continue
        matmul, last = inner[0], users.get(inner[0].output[0], [])
        weight = constants.get(matmul.input[0])
        if (len(last) != 1 or not _is_swap(last[0]) or weight is None or len(weight.dims) != 2
                or {first.output[0], matmul.output[0]} & outputs):
            continue
        name = f"{matmul.input[0]}__onnxdual_transposed_{matmul.name or matmul.output[0]}"
        model.graph.initializer.append(
            numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(weight).T), name))
        fused[id(first)] = helper.make_node("MatMul", [first.input[0], name], [last[0].output[0]],
                                            name=f"{matmul.name or matmul.output[0]}__onnxdual_fused")
        dropped |= {id(first), id(matmul), id(last[0])}
    if not fused:
        return model
    nodes = [fused.get(id(n), n) for n in model.graph.node if id(n) in fused or id(n) not in dropped]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def global_max_pools(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each ``GlobalMaxPool`` of an input of known rank as ``ReduceMax`` over axes ``2..rank-1`` with
    ``keepdims=1``: the axes as an attribute below opset 18, a constant input from 18 on."""
    if not any(n.op_type == "GlobalMaxPool" and n.domain in ("", "ai.onnx") for n in model.graph.node):
        return model
    shapes = inferred_shapes(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    out_nodes = []
    for node in model.graph.node:
        rank = len(shapes.get(node.input[0], [])) if node.input else 0
        if node.op_type != "GlobalMaxPool" or node.domain not in ("", "ai.onnx") or rank < 3:
            out_nodes.append(node)
            continue
        axes = list(range(2, rank))
        label = f"{node.name or node.output[0]}__onnxdual_global_max"
        if opset < 18:
            out_nodes.append(helper.make_node("ReduceMax", [node.input[0]], [node.output[0]], name=label,
                                              axes=axes, keepdims=1))
        else:
            axes_tensor = numpy_helper.from_array(np.array(axes, dtype=np.int64), f"{label}_axes")
            model.graph.initializer.append(axes_tensor)
            out_nodes.append(helper.make_node("ReduceMax", [node.input[0], f"{label}_axes"], [node.output[0]],
                                              name=label, keepdims=1))
    del model.graph.node[:]
    model.graph.node.extend(out_nodes)
    return model


#: onnx2torch's (torch's) Selu constants, the ONNX defaults
SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875


def selu_parameters(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each ``Selu`` whose ``alpha`` or ``gamma`` is not the default as ``Mul(Elu(x, alpha), gamma)`` (a
    float32 constant ``gamma``; the default Selu stays, onnx2torch converts it)."""
    def parameters(node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return float(attrs.get("alpha", SELU_ALPHA)), float(attrs.get("gamma", SELU_GAMMA))

    def lowered(node):
        if node.op_type != "Selu" or node.domain not in ("", "ai.onnx"):
            return False
        alpha, gamma = parameters(node)
        return not (np.isclose(alpha, SELU_ALPHA) and np.isclose(gamma, SELU_GAMMA))

    if not any(lowered(n) for n in model.graph.node):
        return model
    out_nodes = []
    for node in model.graph.node:
        if not lowered(node):
            out_nodes.append(node)
            continue
        alpha, gamma = parameters(node)
        label = f"{node.name or node.output[0]}__onnxdual_selu"
        elu, scale = f"{label}_elu", f"{label}_gamma"
        model.graph.initializer.append(numpy_helper.from_array(np.array(gamma, dtype=np.float32), scale))
        out_nodes.append(helper.make_node("Elu", [node.input[0]], [elu], name=elu, alpha=alpha))
        out_nodes.append(helper.make_node("Mul", [elu, scale], [node.output[0]], name=label))
    del model.graph.node[:]
    model.graph.node.extend(out_nodes)
    return model
