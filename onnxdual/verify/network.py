"""Loading a network for verification: the torch module, its onnxruntime session (the reference semantics
for counterexamples) and its interface, with the graph rewrites VNN-COMP networks need and two checks at
load time (the conversion agrees with onnxruntime on a batch; the dual network can be built)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from onnxdual.engine.network import DualNetwork
from onnxdual.errors import ModelLoadError, OnnxDualError, UnsupportedOpsError
from onnxdual.frontend.onnx_import import read_model_bytes
from onnxdual.verify.result import QueryError


def _type_name(elem_type: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type{elem_type}"


def _static_shape(value_info) -> tuple[int, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in dims)


@dataclass
class Network:
    """A network ready for verification: the torch module (:func:`onnxdual.load`), its onnxruntime session
    (the reference semantics for counterexamples), and its interface.

    ``input_shape`` is the shape fed to onnxruntime (symbolic dimensions set to 1); ``example_shape`` the
    per-example shape of the torch module (``input_shape[1:]`` when the first dimension is a batch of 1,
    else ``input_shape`` with a batch dimension added in front)."""

    net: nn.Module
    session: object
    input_shape: tuple[int, ...]
    example_shape: tuple[int, ...]
    n_inputs: int
    n_outputs: int
    input_type: str  # ONNX element type name, e.g. "float"
    output_type: str
    opset: int
    source: str = "<model>"
    input_name: str = "input"


def load_network(path: str | os.PathLike, *, check: bool = True) -> Network:
    """Load an ONNX network (``.onnx`` or gzip-compressed) for :class:`Verifier`.

    Raises :class:`ModelLoadError` (unreadable, several inputs/outputs, not float32, torch conversion that
    disagrees with onnxruntime) and :class:`~onnxdual.errors.UnsupportedOpsError` (every operator without a
    dual layer). With ``check`` the dual structure is built once so that unsupported uses of supported
    operators are reported here rather than during verification."""
    import onnx
    import onnxruntime as ort

    import onnxdual
    from onnxdual.frontend.onnx_import import graph_inputs, missing_duals, opset_of

    source = str(path)
    data = read_model_bytes(path)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and friends
        raise ModelLoadError(f"cannot read {source} as an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise ModelLoadError(f"{source} holds no ONNX graph (is it an ONNX file?)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - reported as a load error
        raise ModelLoadError(f"{source} is not a valid ONNX model: {str(exc).splitlines()[0]}") from None
    inputs = graph_inputs(model)
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ModelLoadError(f"{source}: onnxdual verifies networks with exactly one input and one output "
                             f"(this one has {len(inputs)} inputs and {len(model.graph.output)} outputs)")
    in_info = next(v for v in model.graph.input if v.name == inputs[0])
    out_info = model.graph.output[0]
    in_type = _type_name(in_info.type.tensor_type.elem_type)
    out_type = _type_name(out_info.type.tensor_type.elem_type)
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - reported as a load error
        raise ModelLoadError(f"{source}: onnxruntime cannot run it: {str(exc).splitlines()[0]}") from None
    if in_type != "float" or out_type != "float":
        raise QueryError(f"{source}: onnxdual analyses float32 networks; this one maps {in_type} to "
                         f"{out_type}", condition=3)
    missing = missing_duals(model)  # every operator without a dual layer, before any rewriting
    if missing:
        raise UnsupportedOpsError(missing)
    shape = _static_shape(in_info)
    model = _downgrade(_constants_to_initializers(model))  # onnxdual.load writes auto_pad out
    # the first dimension is a batch of 1 when it can be (as in VNN-COMP files); otherwise (or if that
    # interpretation does not compute onnxruntime's function) a batch dimension is added in front
    modes = [True, False] if len(shape) >= 2 and shape[0] == 1 else [False]
    first_error = None
    for leading_batch in modes:
        example_shape = shape[1:] if leading_batch else shape
        candidate = model if leading_batch else _add_batch_axis(_batch_vector_matmuls(model))
        net = onnxdual.load(candidate)
        try:
            n_out = _check_conversion(net, session, shape, example_shape, source)
            if check:
                _check_dual(net, shape, example_shape, n_out, source)
        except UnsupportedOpsError:
            raise
        except OnnxDualError as exc:
            first_error = first_error or exc
            continue
        return Network(net, session, shape, tuple(example_shape), math.prod(shape), n_out, in_type, out_type,
                       opset_of(model, ""), source, session.get_inputs()[0].name)
    raise first_error


#: the newest opset onnx2torch converts for every operator onnxdual has a dual layer for; newer models are
#: converted down to it with ONNX's version converter (checked against onnxruntime on the original model)
CONVERT_OPSET = 17
_HOLD_DOMAIN = "onnxdual.hold"


def _downgrade(model):
    """Convert a model of opset > :data:`CONVERT_OPSET` down to it, or return it unchanged if ONNX cannot.
    ``Pad`` without ``axes`` (opset 18+) is the same operator as in opset 13 but has no down adapter: it is
    held out of the conversion and put back."""
    import onnx
    from onnx import helper, version_converter

    from onnxdual.frontend.onnx_import import opset_of

    if opset_of(model, "") <= CONVERT_OPSET:
        return model
    work = onnx.ModelProto()
    work.CopyFrom(model)
    held = [n for n in work.graph.node
            if n.op_type == "Pad" and n.domain in ("", "ai.onnx") and len(n.input) <= 3]
    for n in held:
        n.domain = _HOLD_DOMAIN
    if held:
        work.opset_import.append(helper.make_opsetid(_HOLD_DOMAIN, 1))
    try:
        out = version_converter.convert_version(work, CONVERT_OPSET)
    except Exception:  # noqa: BLE001 - no adapter: keep the original, onnx2torch may still manage
        return model
    for n in out.graph.node:
        if n.domain == _HOLD_DOMAIN:
            n.domain = ""
    keep = [o for o in out.opset_import if o.domain != _HOLD_DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(keep)
    return out


def _constants_to_initializers(model):
    """``Constant`` nodes become initializers (onnx2torch needs e.g. ``Conv`` weights as initializers)."""
    import onnx
    from onnx import helper, numpy_helper

    constants = [n for n in model.graph.node if n.op_type == "Constant" and len(n.attribute) == 1]
    if not constants:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
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


def _add_batch_axis(model):
    """For an ONNX input without a batch dimension (onnxdual adds one in front): shift the axes of the
    shape-changing operators on the variable path by one (``Reshape`` targets get a leading ``0``, copy the
    batch; ``Transpose`` permutations, ``Flatten`` axes and ``Pad`` pads get the new axis). Whatever is
    missed here is caught by the batch check against onnxruntime in :func:`load_network`."""
    import onnx
    from onnx import helper, numpy_helper

    from onnxdual.frontend.onnx_import import variable_nodes

    out = onnx.ModelProto()
    out.CopyFrom(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in
                 list(inferred.graph.value_info) + list(inferred.graph.input)
                 if v.type.tensor_type.HasField("shape")}
    except Exception:  # noqa: BLE001 - best effort
        ranks = {}
    inits = {t.name: t for t in out.graph.initializer}
    variable = {n.name or id(n) for n in variable_nodes(model)}
    vnodes = [i for i, n in enumerate(model.graph.node) if (n.name or id(n)) in variable]

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
    return out


def _batch_vector_matmuls(model):
    """Without a batch dimension in the ONNX input, onnxdual adds one in front. ``MatMul(W, x)`` with a
    constant matrix ``W`` and a vector ``x`` does not batch that way; it equals ``MatMul(x, W^T)``, which
    does. Rewrites those nodes (on a copy)."""
    import onnx
    from onnx import numpy_helper

    from onnxdual.frontend.onnx_import import variable_nodes

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
            out = onnx.ModelProto()
            out.CopyFrom(model)
        name = f"{w}__onnxdual_transposed_{i}"
        out.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array.T), name))
        target = out.graph.node[i]
        del target.input[:]
        target.input.extend([x, name])
    return model if out is None else out


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""


def _check_conversion(net: nn.Module, session, shape: tuple[int, ...], example_shape: tuple[int, ...],
                      source: str) -> int:
    """The torch module must compute onnxruntime's outputs, also for a batch of inputs. Returns the number
    of outputs."""
    rng = np.random.default_rng(0)  # positive, mixed and wide probes: ReLUs must not hide a wrong layout
    probes = np.stack([rng.uniform(0.2, 1.2, size=shape), rng.uniform(-1.0, 1.0, size=shape),
                       rng.normal(0.0, 3.0, size=shape)]).astype(np.float32)
    name = session.get_inputs()[0].name
    try:
        ref = np.stack([np.asarray(session.run(None, {name: p})[0], dtype=np.float64).reshape(-1)
                        for p in probes])
    except Exception as exc:  # noqa: BLE001 - reported as a load error
        raise ModelLoadError(f"{source}: onnxruntime fails on an input of shape {list(shape)}: "
                             f"{str(exc).splitlines()[0]}") from None
    try:
        with torch.no_grad():
            got = net(torch.from_numpy(probes).reshape(3, *example_shape)).double().reshape(3, -1).numpy()
    except Exception as exc:  # noqa: BLE001 - reported as a load error
        raise ModelLoadError(f"{source}: the network cannot be evaluated on a batch of inputs of shape "
                             f"{list(shape)} after conversion ({type(exc).__name__}: {_first_line(exc)})"
                             ) from None
    scale = 1.0 + np.abs(ref).max(initial=0.0)
    if got.shape != ref.shape or not np.allclose(got, ref, rtol=1e-4, atol=1e-5 * scale):
        raise ModelLoadError(f"{source}: the torch conversion of the network disagrees with onnxruntime on a "
                             "batch of inputs; it cannot be verified")
    return int(ref.shape[1])


def _check_dual(net: nn.Module, shape: tuple[int, ...], example_shape: tuple[int, ...], n_out: int,
                source: str) -> None:
    """Build the dual network and bound a tiny batch: unsupported uses of supported operators (``Mul`` of
    two variables, ...) are reported now, as :class:`OnnxDualError`, instead of during verification."""
    x = torch.zeros((2, *example_shape))
    radius = torch.zeros_like(x).reshape(2, -1)
    radius[:, 0] = 1e-3
    try:
        dual = DualNetwork(net, x, radius.reshape(x.shape))
        with torch.no_grad():
            dual.lower_bound(torch.eye(n_out).expand(2, -1, -1)[:, :2].contiguous())
    except OnnxDualError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as a load error
        raise ModelLoadError(f"{source}: the dual network cannot be computed for this network "
                             f"({type(exc).__name__}: {_first_line(exc)})") from None
