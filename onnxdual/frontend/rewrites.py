"""Graph rewrites onnxdual applies before onnx2torch converts a model, each on a copy, none changing the
function the model computes (except :func:`add_batch_axis`, which adds the batch dimension onnxdual feeds):

* :func:`prepare_for_conversion` -- what every load does: ``allowzero = 1`` is dropped from ``Reshape``
  nodes whose constant target has no zero (the same operator; onnx2torch rejects the attribute), constant
  ``Reshape`` targets whose first entry is the input's static batch size (``[1, ...]``, or ``[2, ...]`` from
  a dynamo export at batch 2) copy the batch dimension instead (any batch size loads), an omitted optional
  ``Clip`` min becomes ``-inf`` (onnx2torch rejects the gap), ``auto_pad`` becomes explicit ``pads``
  (onnx2torch knows only those), and ConvTranspose's ``output_shape`` / ``auto_pad`` / asymmetric ``pads``
  become symmetric ``pads`` plus ``output_padding`` (onnx2torch ignores ``output_shape``, rejects the rest),
  and operators are lowered to others (:mod:`~onnxdual.frontend.lowering`: Split, SpaceToDepth, ...).
* :func:`constants_to_initializers`, :func:`add_batch_axis`, :func:`batch_vector_matmuls` -- what the
  verifier adds for VNN-COMP files (``Constant`` weights, inputs without a batch dimension).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxdual.frontend.folding import concats_as_pads
from onnxdual.frontend.lowering import constant_tensors, inferred_shapes, lower_for_conversion
from onnxdual.frontend.reader import copy_model, graph_inputs, variable_nodes


def prepare_for_conversion(model: onnx.ModelProto) -> onnx.ModelProto:
    """The rewrites every load applies (the caller passes a copy it owns; returns the rewritten model)."""
    model = lower_for_conversion(free_batch_in_reshapes(drop_needless_allowzero(model)))
    return conv_transpose_pads(explicit_pads(fill_optional_clip_min(model)))


def drop_needless_allowzero(model: onnx.ModelProto) -> onnx.ModelProto:
    """``Reshape(allowzero=1)`` with a constant target without zeros is ``Reshape(allowzero=0)`` (the
    attribute only changes what a ``0`` entry means); the dynamo exporter writes it on every Reshape."""
    constants = constant_tensors(model)
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        if 0 in numpy_helper.to_array(constants[node.input[1]]).reshape(-1):
            continue
        for attr in list(node.attribute):
            if attr.name == "allowzero":
                node.attribute.remove(attr)
    return model


def _static_batch(model: onnx.ModelProto) -> int:
    """The input's static first dimension (1 when it is free or unknown: the batch of VNN-COMP files)."""
    names = graph_inputs(model)
    info = next((v for v in model.graph.input if names and v.name == names[0]), None)
    dims = info.type.tensor_type.shape.dim if info is not None else []
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else 1


def free_batch_in_reshapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite constant Reshape targets ``[b, ...]`` to ``[0, ...]`` (copy the batch dimension), where ``b``
    is 1 or the input's static batch size, and ``allowzero`` is not set."""
    constants = constant_tensors(model)
    variable = {o for n in variable_nodes(model) for o in n.output} | set(graph_inputs(model))
    batch = _static_batch(model)
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[0] not in variable:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            continue
        tensor = constants.get(node.input[1])
        if tensor is None:
            continue
        shape = numpy_helper.to_array(tensor).copy()
        if shape.ndim == 1 and shape.size and shape[0] in (1, batch):
            shape[0] = 0
            new_name = f"{node.input[1]}__onnxdual_free_batch_{node.name or id(node)}"
            model.graph.initializer.append(numpy_helper.from_array(shape.astype(np.int64), new_name))
            node.input[1] = new_name
    return model


def fill_optional_clip_min(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx2torch rejects ``Clip(x, "", max)`` (an omitted optional min); -inf is the same operator."""
    for node in model.graph.node:
        if node.op_type == "Clip" and len(node.input) >= 3 and node.input[1] == "":
            name = f"__onnxdual_clip_min_{node.name or id(node)}"
            model.graph.initializer.append(numpy_helper.from_array(np.array(-np.inf, dtype=np.float32), name))
            node.input[1] = name
    return model


AUTO_PAD_OPS = ("Conv", "AveragePool", "MaxPool")


def explicit_pads(model: onnx.ModelProto) -> onnx.ModelProto:
    """``auto_pad`` (``SAME_UPPER``, ``SAME_LOWER``, ``VALID``) of ``Conv``, ``AveragePool`` and ``MaxPool``
    written as explicit ``pads`` (onnx2torch implements only the latter), from the inferred input shapes."""
    nodes = [n for n in model.graph.node if n.op_type in AUTO_PAD_OPS and any(
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
    out = copy_model(model)
    for node in out.graph.node:
        if node.op_type not in AUTO_PAD_OPS:
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


def conv_transpose_pads(model: onnx.ModelProto) -> onnx.ModelProto:
    """ConvTranspose's padding as onnx2torch implements it: symmetric ``pads`` and ``output_padding``.

    ONNX crops ``pads`` (begin, end) from the full transposed convolution, after ``output_padding`` extra
    rows at the end; ``output_shape`` and ``auto_pad`` define the pads through the ONNX formula
    ``total = stride * (in - 1) + output_padding + (kernel - 1) * dilation + 1 - out`` (the larger half at
    the end for ``SAME_UPPER``, at the beginning otherwise). Cropping ``(b, e)`` is cropping ``m = min(b, e)``
    on both sides (the symmetric pads torch has) and then ``b - m`` at the beginning and ``e - m`` at the end
    (a ``Slice`` after the node; TensorFlow's 'same' transposed convolutions need it). Nodes whose shapes are
    unknown are left for onnx2torch to refuse."""
    if not any(n.op_type == "ConvTranspose" for n in model.graph.node):
        return model
    shapes: dict[str, list[int]] | None = None
    inits = {t.name: t for t in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    crops: dict[int, onnx.NodeProto] = {}  # node index -> the Slice that crops the rest
    for index, node in enumerate(model.graph.node):
        if node.op_type != "ConvTranspose":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        kernel = attrs.get("kernel_shape") or (
            list(inits[node.input[1]].dims[2:]) if node.input[1] in inits else None)
        if kernel is None:
            continue
        d = len(kernel)
        strides, dilations = attrs.get("strides", [1] * d), attrs.get("dilations", [1] * d)
        out_pad = list(attrs.get("output_padding", [0] * d))
        if "output_shape" in attrs or mode in ("SAME_UPPER", "SAME_LOWER"):
            shapes = inferred_shapes(model) if shapes is None else shapes
            spatial = shapes.get(node.input[0], [])[2:]
            if len(spatial) != d or min(spatial, default=0) <= 0:
                continue
            out = list(attrs.get("output_shape", [n * s for n, s in zip(spatial, strides)]))[-d:]
            total = [s * (n - 1) + p + (k - 1) * dl + 1 - o
                     for s, n, p, k, dl, o in zip(strides, spatial, out_pad, kernel, dilations, out)]
            if min(total) < 0:
                continue
            begins = [t // 2 if mode == "SAME_UPPER" else t - t // 2 for t in total]
            ends = [t - b for t, b in zip(total, begins)]
        elif mode == "VALID":
            begins = ends = [0] * d
        else:
            pads = list(attrs.get("pads", [0] * 2 * d))
            begins, ends = pads[:d], pads[d:]
            if begins == ends:
                continue
        both = [min(b, e) for b, e in zip(begins, ends)]
        for a in list(node.attribute):
            if a.name in ("auto_pad", "output_shape", "pads", "output_padding"):
                node.attribute.remove(a)
        node.attribute.extend([helper.make_attribute("pads", both + both),
                               helper.make_attribute("output_padding", out_pad)])
        if begins != ends:
            crops[index] = _crop(model, node, [b - m for b, m in zip(begins, both)],
                                 [e - m for e, m in zip(ends, both)], opset)
    if crops:
        nodes = [n for i, n in enumerate(model.graph.node) for n in ([n, crops[i]] if i in crops else [n])]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return model


def _crop(model: onnx.ModelProto, node: onnx.NodeProto, front: list[int], back: list[int],
          opset: int) -> onnx.NodeProto:
    """A Slice that removes ``front[d]`` entries from the beginning and ``back[d]`` from the end of spatial
    axis ``d`` of ``node``'s output (which it takes over: the node writes to a new name)."""
    output = node.output[0]
    node.output[0] = f"{output}__onnxdual_uncropped"
    cropped = [d for d in range(len(front)) if front[d] or back[d]]
    axes = [2 + d for d in cropped]
    starts, ends = [front[d] for d in cropped], [-back[d] if back[d] else 2**62 for d in cropped]
    name = f"{node.name or output}__onnxdual_crop"
    if opset < 10:
        return helper.make_node("Slice", [node.output[0]], [output], name=name, starts=starts, ends=ends,
                                axes=axes)
    for part, value in (("starts", starts), ("ends", ends), ("axes", axes)):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), f"{name}_{part}"))
    return helper.make_node("Slice", [node.output[0], f"{name}_starts", f"{name}_ends", f"{name}_axes"],
                            [output], name=name)


def constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """``Constant`` nodes become initializers (onnx2torch needs e.g. ``Conv`` weights as initializers)."""
    constants = [n for n in model.graph.node if n.op_type == "Constant" and len(n.attribute) == 1]
    if not constants:
        return model
    out = copy_model(model)
    keep = []
    for node in out.graph.node:
        if node.op_type != "Constant" or len(node.attribute) != 1:
            keep.append(node)
            continue
        attr = node.attribute[0]
        value = helper.get_attribute_value(attr)
        if attr.name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value)
            tensor.name = node.output[0]
        elif attr.name in ("value_float", "value_floats"):
            tensor = numpy_helper.from_array(np.asarray(value, dtype=np.float32), node.output[0])
        elif attr.name in ("value_int", "value_ints"):
            tensor = numpy_helper.from_array(np.asarray(value, dtype=np.int64), node.output[0])
        else:
            keep.append(node)
            continue
        out.graph.initializer.append(tensor)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    return out


def add_batch_axis(model: onnx.ModelProto) -> onnx.ModelProto:
    """For an ONNX input without a batch dimension (onnxdual adds one in front): shift the axes of the
    shape-changing operators on the variable path by one (``Reshape`` targets get a leading ``0``, copy the
    batch; ``Transpose`` permutations, ``Flatten`` axes and ``Pad`` pads get the new axis; the non-negative
    axes of ``Gather`` on a variable tensor, ``Concat``, ``Slice`` (no axes: its first ones), ``Squeeze`` /
    ``Unsqueeze`` and ``Reduce*`` count one more; a ``Concat`` with constant parts becomes padded values
    plus the constants, which cannot carry the batch themselves). Whatever is
    missed here is caught by the batch check against onnxruntime in
    :func:`onnxdual.verify.network.load_network`."""
    out = copy_model(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in
                list(inferred.graph.value_info) + list(inferred.graph.input)
                if v.type.tensor_type.HasField("shape")}  # 0 where unknown
    except Exception:  # noqa: BLE001 - best effort
        dims = {}
    ranks = {name: len(d) for name, d in dims.items()}
    inits = {t.name: t for t in out.graph.initializer}
    padded_concats: dict[int, dict[int, np.ndarray]] = {}  # Concats of values and constants, by node index
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    values, vnodes = set(graph_inputs(model)), []  # by position: unnamed nodes have no stable identity
    for i, n in enumerate(model.graph.node):
        if any(name in values for name in n.input if name):
            vnodes.append(i)
            values.update(o for o in n.output if o)

    def new_init(array, base, i):
        name = f"{base}__onnxdual_batched_{i}"
        out.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def set_attr(node, name, value):
        for a in node.attribute:
            if a.name == name:
                node.attribute.remove(a)
                break
        node.attribute.append(helper.make_attribute(name, value))

    for i in vnodes:
        node = out.graph.node[i]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in inits:
            if attrs.get("allowzero", 0):
                continue
            target = numpy_helper.to_array(inits[node.input[1]]).astype(np.int64)
            node.input[1] = new_init(np.concatenate([[0], target]).astype(np.int64), node.input[1], i)
        elif node.op_type == "Transpose":
            perm = attrs.get("perm")
            if perm is None:
                rank = ranks.get(node.input[0])
                if rank is None:
                    continue
                perm = list(reversed(range(rank)))
            set_attr(node, "perm", [0] + [int(p) + 1 for p in perm])
        elif node.op_type == "Flatten":
            axis = int(attrs.get("axis", 1))
            if axis >= 0:
                set_attr(node, "axis", axis + 1)
        elif node.op_type == "Pad":
            if "pads" in attrs:
                pads = list(attrs["pads"])
                r = len(pads) // 2
                set_attr(node, "pads", [0] + pads[:r] + [0] + pads[r:])
            elif len(node.input) > 1 and node.input[1] in inits:
                if len(node.input) > 3 and node.input[3]:
                    continue  # explicit axes: left alone
                pads = numpy_helper.to_array(inits[node.input[1]]).astype(np.int64)
                r = len(pads) // 2
                node.input[1] = new_init(np.concatenate([[0], pads[:r], [0], pads[r:]]).astype(np.int64),
                                         node.input[1], i)
        elif node.op_type in _AXIS_OPS:
            if node.op_type == "Gather" and node.input[0] not in values:
                continue  # variable indices into a constant table: no batch axis in the data
            if node.op_type == "Concat" and not all(name in values for name in node.input):
                if not all(name in values or name in inits for name in node.input):
                    continue
                # the constant parts get a batch dimension of 1: Pad(x) + C (folding.concats_as_pads)
                padded_concats[i] = {p: numpy_helper.to_array(inits[name])[None]
                                     for p, name in enumerate(node.input) if name not in values}
            axis = int(attrs.get("axis", -1 if node.op_type.endswith("Softmax") else 0))
            if node.op_type.endswith("Softmax") and opset < 13:
                continue  # Softmax-1/11 coerce to 2-d at ``axis``: the batch axis changes what that means
            if axis >= 0:
                set_attr(node, "axis", axis + 1)
        elif node.op_type == "Slice" and len(node.input) >= 3:
            starts = inits.get(node.input[1])
            axes = inits.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
            if starts is None or (len(node.input) > 3 and node.input[3] and axes is None):
                continue
            given = (numpy_helper.to_array(axes) if axes is not None
                     else np.arange(numpy_helper.to_array(starts).size)).astype(np.int64)
            while len(node.input) < 4:
                node.input.append("")
            node.input[3] = new_init(np.where(given >= 0, given + 1, given), node.input[3] or node.name, i)
        elif node.op_type == "Slice" and "axes" in attrs:  # Slice-1
            set_attr(node, "axes", [a + 1 if a >= 0 else a for a in attrs["axes"]])
        elif node.op_type in _AXES_OPS:
            if "axes" in attrs:
                set_attr(node, "axes", [a + 1 if a >= 0 else a for a in attrs["axes"]])
            elif len(node.input) > 1 and node.input[1] in inits:
                axes = numpy_helper.to_array(inits[node.input[1]]).astype(np.int64)
                node.input[1] = new_init(np.where(axes >= 0, axes + 1, axes), node.input[1], i)
            elif (len(node.input) < 2 or not node.input[1]) and node.op_type.startswith("Reduce") \
                    and not attrs.get("noop_with_empty_axes", 0) and node.input[0] in ranks:
                # no axes: every axis of the example (not the batch one onnxdual adds)
                every = list(range(1, ranks[node.input[0]] + 1))
                if opset >= (13 if node.op_type == "ReduceSum" else 18):
                    while len(node.input) < 2:
                        node.input.append("")
                    node.input[1] = new_init(np.array(every, dtype=np.int64), node.name or node.output[0], i)
                else:
                    set_attr(node, "axes", every)
    if padded_concats:
        batched = {name: [1, *d] for name, d in dims.items()}
        trial = copy_model(out)
        if concats_as_pads(trial, padded_concats, batched):
            return trial
    return out


#: operators with one ``axis`` attribute that counts from the front when non-negative (default 0; Softmax's
#: -1 from opset 13 on)
_AXIS_OPS = ("Gather", "Concat", "Split", "Softmax", "LogSoftmax")
#: operators with ``axes`` (an attribute, or an input from opset 13 / 18) that count from the front
_AXES_OPS = ("Squeeze", "Unsqueeze", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
             "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")


def batch_vector_matmuls(model: onnx.ModelProto) -> onnx.ModelProto:
    """Without a batch dimension in the ONNX input, onnxdual adds one in front. ``MatMul(W, x)`` with a
    constant matrix ``W`` and a vector ``x`` does not batch that way; it equals ``MatMul(x, W^T)``, which
    does. Rewrites those nodes (on a copy)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - best effort
        return model
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
             if v.type.tensor_type.HasField("shape")}
    variable = {o for node in variable_nodes(model) for o in node.output}
    variable |= {v.name for v in model.graph.input}
    initializers = {t.name: t for t in model.graph.initializer}
    out = None
    for i, node in enumerate(model.graph.node):
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        w, x = node.input
        if w in variable or w not in initializers or x not in variable or ranks.get(x) != 1:
            continue
        array = numpy_helper.to_array(initializers[w])
        if array.ndim != 2:
            continue
        if out is None:
            out = copy_model(model)
        name = f"{w}__onnxdual_transposed_{i}"
        out.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array.T), name))
        target = out.graph.node[i]
        del target.input[:]
        target.input.extend([x, name])
    return model if out is None else out
