"""Deciding VNN-LIB properties with dual bounds, input splitting and attacks.

A property (:mod:`onnxdual.specs`) lists cases: an input box and the unsafe output region there, a disjunction
of conjunctions ``A y <= b``. The property holds (``unsat``) when no input of any box reaches any conjunction.

* **Proofs.** A conjunction is unreachable on a box when the dual bound (Theorem 1) proves that one of its
  rows can never be satisfied there, or that a non-negative combination ``lambda`` of its rows cannot:
  ``lb(lambda^T A y) - lambda^T b > 0`` implies that some row is violated for every reachable ``y``. This is
  sound for *every* ``lambda >= 0`` because :meth:`DualNetwork.lower_bound` is sound for any objective; we try
  each row, their (normalised) sum, and a few projected-gradient steps on ``lambda`` over the simplex
  (``lambda -> lb(lambda^T A y) - lambda^T b`` is concave: the dual objective is concave in its objective
  vector). Every case of the property is bounded in one batch.
* **Splitting.** Boxes that stay undecided are split in two along the input coordinate with the largest
  ``|gradient| x width`` at the box centre, when at most ``split_max_inputs`` coordinates are perturbed (small
  input spaces, where splitting pays off), until everything is proven or the time runs out.
* **Counterexamples.** ``sat`` only for a float32 input inside the box (zero tolerance) whose output,
  recomputed by onnxruntime in float32, satisfies every row of a conjunction with zero tolerance. Candidates
  come from box centres and from PGD. Otherwise ``unknown`` or ``timeout``.
* **Time.** The deadline is checked inside every loop (attack steps, lambda steps, splitting batches); a run
  overruns it by at most one bound computation, and does not start one that its measured cost says cannot
  finish in time.

Arithmetic: the input box handed to the dual network is rounded *outwards* to float32 (and checked), so the
bound covers every real input of the box; the network is analysed in real arithmetic on its float32 weights,
as VNN-COMP tools do (the bound itself is computed in float32). ``strict=True`` refuses a proof whose margin
is within a float32-rounding tolerance of zero (``unknown`` instead).

The module also holds what the ``verify`` command needs around the engine, as pure functions: loading a
(possibly gzip-compressed) ONNX network with its onnxruntime session, the VNN-LIB 2.0 network declarations of
a query, the standard's checks on them (chapter 5, "error conditions for the verify command"), and the
standard's two assignment formats.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from onnxdual.engine.input_sets import Box
from onnxdual.engine.network import DualNetwork
from onnxdual.errors import InvalidInputError, ModelLoadError, OnnxDualError, UnsupportedOpsError
from onnxdual.frontend.onnx_import import read_model_bytes

SAT, UNSAT, UNKNOWN, TIMEOUT = "sat", "unsat", "unknown", "timeout"
ANSWERS = (SAT, UNSAT, UNKNOWN, TIMEOUT)


class QueryError(OnnxDualError):
    """A query the ``verify`` command must refuse (VNN-LIB 2.0, chapter 5: network files that do not match
    the declarations, element types that do not match the ONNX model, or types onnxdual cannot analyse
    soundly). ``condition`` is the number of the standard's error condition (1, 2 or 3), 0 for others."""

    def __init__(self, message: str, condition: int = 0):
        super().__init__(message)
        self.condition = condition


@dataclass(frozen=True)
class VerifyResult:
    """The answer of :meth:`Verifier.decide`.

    ``best_margin``: for ``unsat`` the smallest proving margin over the sub-boxes (how much slack the proof
    had, in units of the normalised constraint rows); otherwise the margin at the root boxes (the best lower
    bound of ``max_i (a_i y - b_i)`` over the worst case and conjunction; ``<= 0`` means not proven there),
    ``None`` when no bound was computed."""

    answer: str
    seconds: float
    witness_x: np.ndarray | None = None  # flat float32 input inside the box
    witness_y: np.ndarray | None = None  # flat output computed by onnxruntime at witness_x
    best_margin: float | None = None
    boxes: int = 0  # sub-boxes bounded
    case: int | None = None  # index of the property case the witness belongs to
    attack_steps: int = 0


class Deadline:
    """A wall-clock deadline (``time.perf_counter``)."""

    def __init__(self, seconds: float, start: float | None = None):
        self.start = time.perf_counter() if start is None else start
        self.end = self.start + max(0.0, float(seconds))

    def remaining(self) -> float:
        return self.end - time.perf_counter()

    def passed(self) -> bool:
        return time.perf_counter() >= self.end

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# ---------------------------------------------------------------------------------------------- networks


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
    model = _explicit_pads(_downgrade(_constants_to_initializers(model)))
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


def _explicit_pads(model):
    """``auto_pad`` (``SAME_UPPER``, ``SAME_LOWER``, ``VALID``) of ``Conv`` and ``AveragePool`` written as
    explicit ``pads`` (onnx2torch implements only the latter), from the inferred input shapes."""
    import onnx
    from onnx import helper

    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "AveragePool") and any(
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
        if node.op_type not in ("Conv", "AveragePool"):
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
# --------------------------------------------------------------------------------------- float32 rounding


def _f32_down(v: np.ndarray) -> np.ndarray:
    """The largest float32 values ``<= v`` (as float32)."""
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) > v, np.nextafter(f, np.float32(-np.inf)), f)


def _f32_up(v: np.ndarray) -> np.ndarray:
    """The smallest float32 values ``>= v`` (as float32)."""
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) < v, np.nextafter(f, np.float32(np.inf)), f)


def dual_box(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 centre and radius ``(N, n)`` for the dual network whose box (as :class:`Box` computes it in
    float32) contains ``[lower, upper]`` (float64) in real arithmetic. Coordinates fixed at a float32 value
    keep radius 0 (no dual column)."""
    lo, hi = _f32_down(lower), _f32_up(upper)
    center = ((lo.astype(np.float64) + hi.astype(np.float64)) / 2).astype(np.float32)
    radius = _f32_up(np.maximum(hi.astype(np.float64) - center, center - lo.astype(np.float64)))
    radius = np.where(radius > 0, np.nextafter(radius, np.float32(np.inf)), radius)
    for _ in range(8):
        box = Box.ball(torch.from_numpy(center), torch.from_numpy(radius))
        c, r = box.center.double().numpy(), box.radius.double().numpy()
        short = (c - r > lower) | (c + r < upper)
        if not short.any():
            return center, radius
        grown = np.nextafter(np.maximum(radius, np.float32(1e-30)), np.float32(np.inf))
        radius = np.where(short, np.maximum(grown, radius * np.float32(1 + 2**-20)), radius)
    raise InvalidInputError("cannot represent the input box in float32 (values too large?)")


# ------------------------------------------------------------------------------------------- the verifier


@dataclass
class _Cases:
    """The property's cases, padded to ``D`` conjunctions of ``k`` rows and batched."""

    lower: Tensor  # (K, n) float64
    upper: Tensor  # (K, n)
    inner_lo: Tensor  # (K, n) float32: the float32 points of the box
    inner_hi: Tensor
    has_points: Tensor  # (K,) bool: the box holds a float32 point
    a: Tensor  # (K, D, k, n_out) float64, rows normalised to unit l2 norm (zero rows kept)
    b: Tensor  # (K, D, k)
    rows: Tensor  # (K, D, k) bool: real rows
    disjuncts: Tensor  # (K, D) bool: real conjunctions
    constraints: list  # per case, the OutputConstraint list of the property
    index: list  # per case, its index in prop.cases


@dataclass
class _Stats:
    boxes: int = 0
    attack_steps: int = 0
    bound_seconds: float = 0.0  # measured seconds of bound computations
    bound_boxes: int = 0
    root_margin: float | None = None
    leaf_margin: float = math.inf


class _Found(Exception):
    def __init__(self, x: np.ndarray, y: np.ndarray, case: int):
        self.x, self.y, self.case = x, y, case


class _OutOfTime(Exception):
    pass


class Verifier:
    """Decides VNN-LIB properties of one network.

    Args:
        net: the torch module (:func:`onnxdual.load`).
        input_shape: the input shape onnxruntime expects (with its batch dimension, if any).
        ort_session: an onnxruntime session of the same network, used to confirm counterexamples.
        example_shape: per-example input shape of ``net`` (default ``input_shape[1:]``).
        strict: refuse proofs whose margin is within a float32-rounding tolerance of zero.
        split_max_inputs: split input boxes only when at most this many coordinates are perturbed.
        batch_boxes: boxes bounded in one batch.
        lambda_steps: projected-gradient steps on the row combination of a conjunction.
        device: where bounds and attacks are computed (default: the network's device).
    """

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], ort_session, *,
                 example_shape: tuple[int, ...] | None = None, strict: bool = False,
                 split_max_inputs: int = 16,
                 batch_boxes: int = 512, lambda_steps: int = 20, device: torch.device | str | None = None):
        self.net = net.eval()
        self.input_shape = tuple(int(d) for d in input_shape)
        self.example_shape = tuple(example_shape) if example_shape is not None else self.input_shape[1:]
        self.session = ort_session
        self.strict = strict
        self.split_max_inputs = split_max_inputs
        self.batch_boxes = max(1, batch_boxes)
        self.lambda_steps = lambda_steps
        if device is None:
            p = next(iter(net.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        self._ort_input = ort_session.get_inputs()[0].name

    @classmethod
    def for_network(cls, network: Network, **kwargs) -> Verifier:
        return cls(network.net, network.input_shape, network.session, example_shape=network.example_shape,
                   **kwargs)

    # -- entry point ------------------------------------------------------------------------------------
    def decide(self, prop, timeout: float, seed: int = 0, *,
               deadline: Deadline | None = None) -> VerifyResult:
        """Decide ``prop`` within ``timeout`` seconds (or by ``deadline``). Never raises for a timeout."""
        deadline = deadline or Deadline(timeout)
        stats = _Stats()
        gen = torch.Generator().manual_seed(seed)
        try:
            if deadline.passed():
                raise _OutOfTime
            with torch.no_grad():
                cases = self._prepare(prop)
            if cases is None:
                return self._result(UNSAT, deadline, stats)
            self._trivial(cases)
            answer = self._search(cases, deadline, stats, gen)
        except _Found as found:
            return self._result(SAT, deadline, stats, found)
        except _OutOfTime:
            return self._result(TIMEOUT, deadline, stats)
        return self._result(answer, deadline, stats)

    def _result(self, answer: str, deadline: Deadline, stats: _Stats,
                found: _Found | None = None) -> VerifyResult:
        margin = None
        if answer == UNSAT:
            margin = stats.leaf_margin if math.isfinite(stats.leaf_margin) else None
        elif stats.root_margin is not None:
            margin = stats.root_margin
        if found is not None:
            return VerifyResult(SAT, deadline.elapsed(), found.x, found.y, None, stats.boxes, found.case,
                                stats.attack_steps)
        return VerifyResult(answer, deadline.elapsed(), None, None, margin, stats.boxes, None,
                            stats.attack_steps)

    # -- preparation ------------------------------------------------------------------------------------
    def _prepare(self, prop) -> _Cases | None:
        n_in = math.prod(self.input_shape)
        kept = []
        for i, (region, conjunctions) in enumerate(prop.cases):
            if region.n_inputs != n_in:
                raise InvalidInputError(f"the property has {region.n_inputs} inputs, the network {n_in}")
            lo, hi = np.asarray(region.lower, np.float64), np.asarray(region.upper, np.float64)
            if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
                raise InvalidInputError(f"case {i}: every input needs finite lower and upper bounds")
            if not conjunctions or np.any(lo > hi):
                continue  # nothing unsafe here, or an empty box
            kept.append((i, lo, hi, list(conjunctions)))
        if not kept:
            return None
        n_out = kept[0][3][0].A.shape[1]
        d_max = max(len(c) for *_, c in kept)
        k_max = max(1, max(c.A.shape[0] for *_, cs in kept for c in cs))
        K = len(kept)
        a = torch.zeros((K, d_max, k_max, n_out), dtype=torch.float64)
        b = torch.zeros((K, d_max, k_max), dtype=torch.float64)
        rows = torch.zeros((K, d_max, k_max), dtype=torch.bool)
        disjuncts = torch.zeros((K, d_max), dtype=torch.bool)
        lower = torch.zeros((K, n_in), dtype=torch.float64)
        upper = torch.zeros((K, n_in), dtype=torch.float64)
        for j, (_, lo, hi, cs) in enumerate(kept):
            lower[j], upper[j] = torch.from_numpy(lo), torch.from_numpy(hi)
            for d, c in enumerate(cs):
                disjuncts[j, d] = True
                m = c.A.shape[0]
                if m == 0:
                    continue
                norms = np.linalg.norm(c.A, axis=1)
                scale = np.where(norms > 0, norms, 1.0)
                a[j, d, :m] = torch.from_numpy(c.A / scale[:, None])
                b[j, d, :m] = torch.from_numpy(c.b / scale)
                rows[j, d, :m] = True
        inner_lo = torch.from_numpy(_f32_up(lower.numpy()))
        inner_hi = torch.from_numpy(_f32_down(upper.numpy()))
        has_points = (inner_lo <= inner_hi).all(1)
        return _Cases(lower, upper, inner_lo, inner_hi, has_points, a, b, rows, disjuncts,
                      [cs for *_, cs in kept], [i for i, *_ in kept])

    def _trivial(self, cases: _Cases) -> None:
        """A conjunction without rows contains every output: any float32 point of its box is a witness."""
        for j, cs in enumerate(cases.constraints):
            if any(c.A.shape[0] == 0 for c in cs) and bool(cases.has_points[j]):
                x = ((cases.inner_lo[j].double() + cases.inner_hi[j].double()) / 2).float()
                self._confirm(x.numpy(), cases, j)

    # -- counterexamples --------------------------------------------------------------------------------
    def _run_ort(self, flat: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self._ort_input: flat.reshape(self.input_shape).astype(np.float32)})[0]
        return np.asarray(out).reshape(-1)

    def _confirm(self, x: np.ndarray, cases: _Cases, j: int) -> None:
        """Raise :class:`_Found` if the float32 point ``x`` lies in case ``j``'s box and onnxruntime's output
        there meets one of its conjunctions, both with zero tolerance."""
        flat = np.asarray(x, dtype=np.float32).reshape(-1)
        lo = np.asarray(cases.inner_lo[j].numpy(), dtype=np.float32)
        hi = np.asarray(cases.inner_hi[j].numpy(), dtype=np.float32)
        flat = np.minimum(np.maximum(flat, lo), hi)
        x64 = flat.astype(np.float64)
        if not (np.all(cases.lower[j].numpy() <= x64) and np.all(x64 <= cases.upper[j].numpy())):
            return
        y = self._run_ort(flat)
        if not np.all(np.isfinite(y)):
            return
        y64 = y.astype(np.float64)
        for c in cases.constraints[j]:
            if c.contains(y64):
                raise _Found(flat.copy(), y.astype(np.float32).copy(), cases.index[j])

    def _violation(self, y: Tensor, cidx: Tensor, cases: _Cases, open_mask: Tensor) -> Tensor:
        """``min_d max_i (a_i y - b_i)`` over the open conjunctions of each box's case: ``(N,)``."""
        a = cases.a[cidx].to(self.device, y.dtype)
        b = cases.b[cidx].to(self.device, y.dtype)
        v = torch.einsum("ndko,no->ndk", a, y) - b
        v = v.masked_fill(~cases.rows[cidx].to(self.device), -math.inf).amax(2)
        no_rows = ~cases.rows[cidx].any(2).to(self.device)
        v = torch.where(no_rows, torch.full_like(v, -1.0), v)
        v = v.masked_fill(~(open_mask & cases.disjuncts[cidx]).to(self.device), math.inf)
        return v.amin(1)

    def _forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], *self.example_shape)).reshape(x.shape[0], -1)

    def _check_points(self, x: Tensor, cidx: Tensor, cases: _Cases, open_mask: Tensor,
                      limit: int = 8) -> Tensor:
        """Evaluate float32 points ``(N, n)``; confirm the most violating ones with onnxruntime. Returns the
        violation of each point (``<= 0``: the torch network reaches the unsafe region)."""
        with torch.no_grad():
            v = self._violation(self._forward(x.to(self.device)), cidx, cases, open_mask).cpu()
        candidates = (v <= 1e-6 * (1 + v.abs())).nonzero().squeeze(1)
        if candidates.numel():
            order = candidates[v[candidates].argsort()][:limit]
            for i in order.tolist():
                self._confirm(x[i].cpu().numpy(), cases, int(cidx[i]))
        return v

    def _attack(self, lo: Tensor, hi: Tensor, cidx: Tensor, cases: _Cases, open_mask: Tensor, steps: int,
                restarts: int, gen: torch.Generator, deadline: Deadline, stats: _Stats) -> Tensor:
        """Batched PGD on float32 boxes ``lo <= x <= hi`` ``(N, n)``, minimising each box's violation;
        confirms candidates (raises :class:`_Found`). Returns the best violation per box."""
        n = lo.shape[0]
        lo_d, hi_d = lo.to(self.device), hi.to(self.device)
        width = hi_d - lo_d
        best = torch.full((n,), math.inf)
        best_x = lo.clone()
        for restart in range(restarts):
            if restart == 0:
                x = lo_d + width / 2
            else:
                u = torch.rand(lo.shape, generator=gen).to(self.device)
                corner = (torch.rand(lo.shape, generator=gen) < 0.5).to(self.device, lo.dtype)
                pick_corner = torch.rand(n, 1, generator=gen).to(self.device) < 0.5
                x = lo_d + width * torch.where(pick_corner, corner, u)
            for step in range(steps + 1):
                if deadline.passed():
                    raise _OutOfTime
                x = torch.minimum(torch.maximum(x.detach(), lo_d), hi_d).requires_grad_(step < steps)
                with torch.enable_grad() if step < steps else torch.no_grad():
                    v = self._violation(self._forward(x), cidx, cases, open_mask)
                    grad = torch.autograd.grad(v.sum(), x)[0] if step < steps else None
                stats.attack_steps += 1
                vc = v.detach().cpu()
                better = vc < best
                if better.any():
                    best = torch.where(better, vc, best)
                    best_x[better] = x.detach().cpu()[better]
                if grad is None:
                    break
                alpha = 0.5 * (1 + math.cos(math.pi * step / steps)) * 2.0 / max(steps, 4) + 1e-3
                x = x.detach() - alpha * width * grad.sign()
            hits = (best <= 1e-6 * (1 + best.abs())).nonzero().squeeze(1)
            for i in hits[best[hits].argsort()][:8].tolist():
                self._confirm(best_x[i].numpy(), cases, int(cidx[i]))
        return best

    # -- proofs -----------------------------------------------------------------------------------------
    def _tolerance(self, b: Tensor, y_scale: Tensor, n_out: int) -> Tensor:
        """The margin a proof needs, per (box, conjunction): 0, or in strict mode a float32-rounding allowance
        relative to the constants and to the output magnitude at the box centre (rows have unit norm)."""
        if not self.strict:
            return torch.zeros(b.shape[:2], dtype=torch.float64)
        return 1e-5 * (1 + b.abs().amax(2) + y_scale.reshape(-1, 1) * math.sqrt(n_out))

    def _bound_boxes(self, lowers: Tensor, uppers: Tensor, cidx: Tensor, cases: _Cases, open_mask: Tensor,
                     deadline: Deadline, stats: _Stats, lam_init: Tensor | None = None
                     ) -> tuple[Tensor, Tensor, Tensor | None]:
        """For boxes ``(N, n)`` (float64) of cases ``cidx``: the best proven margin of each open conjunction
        ``(N, D)`` (closed or padded ones: +inf), the objective direction ``(N, n_out)`` that came closest
        (for choosing split coordinates), and the row weights ``lambda`` found ``(N, D, k)`` (or ``None``),
        which warm-start the sub-boxes (``lam_init``)."""
        n = lowers.shape[0]
        predicted = stats.bound_seconds / max(stats.bound_boxes, 1) * n
        if stats.bound_boxes and predicted > deadline.remaining():
            raise _OutOfTime
        t0 = time.perf_counter()
        a, b, rows = cases.a[cidx], cases.b[cidx], cases.rows[cidx]
        live = open_mask & cases.disjuncts[cidx]
        _, d, k, n_out = a.shape
        center, radius = dual_box(lowers.numpy(), uppers.numpy())
        center_t = torch.from_numpy(center).reshape(n, *self.example_shape).to(self.device)
        radius_t = torch.from_numpy(radius).reshape(n, *self.example_shape).to(self.device)
        dual = DualNetwork(self.net, center_t, radius_t)
        count = rows.sum(2, keepdim=True).clamp(min=1)
        sum_a = (a * rows.unsqueeze(-1)).sum(2) / count
        sum_b = (b * rows).sum(2) / count.squeeze(2)
        c = torch.cat([a.reshape(n, d * k, n_out), sum_a], 1)
        with torch.no_grad():
            y_center = self._forward(center_t.reshape(n, -1)).double().cpu()
            lb = dual.lower_bound(c.to(self.device, torch.float32)).double().cpu()
        row_m = (lb[:, : d * k].reshape(n, d, k) - b).masked_fill(~rows, -math.inf)
        sum_m = lb[:, d * k:] - sum_b
        margin = torch.maximum(row_m.amax(2), sum_m.masked_fill(~rows.any(2), -math.inf))
        tol = self._tolerance(b, y_center.abs().amax(1), n_out)
        direction = torch.where((row_m.amax(2) >= sum_m).unsqueeze(-1),
                                torch.gather(a, 2, row_m.argmax(2)[..., None, None].expand(n, d, 1, n_out))
                                .squeeze(2), sum_a)
        need = live & (margin <= tol) & (rows.sum(2) >= 2)
        lam = None
        if need.any() and self.lambda_steps > 0:
            lam_m, lam_dir, lam = self._optimise_lambda(dual, a, b, rows, need, tol, deadline, lam_init)
            better = lam_m > margin
            margin = torch.where(better, lam_m, margin)
            direction = torch.where(better.unsqueeze(-1), lam_dir, direction)
        margin = margin - tol
        margin = margin.masked_fill(~live, math.inf)
        # the open conjunctions that came closest decide the split direction
        weight = (live & (margin <= 0)).double().unsqueeze(-1)
        stats.bound_seconds += time.perf_counter() - t0
        stats.bound_boxes += n
        stats.boxes += n
        # box centres are free attack points
        x_center = torch.from_numpy(np.clip(center, cases.inner_lo[cidx].numpy(),
                                            cases.inner_hi[cidx].numpy()))
        self._check_points(x_center, cidx, cases, open_mask & (margin <= 0))
        return margin, (direction * weight).sum(1), lam

    def _optimise_lambda(self, dual: DualNetwork, a: Tensor, b: Tensor, rows: Tensor, need: Tensor,
                         tol: Tensor, deadline: Deadline, lam_init: Tensor | None = None
                         ) -> tuple[Tensor, Tensor, Tensor]:
        """Projected gradient ascent of ``lb(lambda^T A y) - lambda^T b`` over the simplex, for the
        conjunctions in ``need`` ``(N, D)``, from ``lam_init`` (a parent box's weights; fewer steps) or the
        uniform weights. Every iterate is a sound bound; returns the best value per conjunction ``(N, D)``
        (``-inf`` where not optimised), its direction ``lambda^T A`` and its weights ``lambda``."""
        n, d, _, n_out = a.shape
        a_d = a.to(self.device, torch.float32)
        b_d = b.to(self.device, torch.float32)
        valid = rows.to(self.device)
        lam = valid.float() / valid.sum(2, keepdim=True).clamp(min=1)
        steps = self.lambda_steps
        if lam_init is not None:  # negative entries: no weights yet
            init = lam_init.to(self.device, torch.float32)
            known = (init >= 0).all(2, keepdim=True)
            lam = torch.where(known & valid, init, lam)
            if bool(known.squeeze(2)[need.to(self.device)].all()):
                steps = max(3, steps // 3)
        best = torch.full((n, d), -math.inf, dtype=torch.float64)
        best_dir = torch.zeros((n, d, n_out), dtype=torch.float64)
        best_lam = lam.detach().cpu().clone()
        need_d = need.to(self.device)
        stall = 0
        for step in range(steps):
            if deadline.passed():
                break
            lam = lam.detach().requires_grad_(True)
            with torch.enable_grad():
                direction = torch.einsum("ndk,ndko->ndo", lam, a_d)
                lb = dual.lower_bound(direction.reshape(n, d, n_out))
                value = lb - (lam * b_d).sum(2)
                (grad,) = torch.autograd.grad(value[need_d].sum(), lam)
            # the certified value, the constants in float64: lb(lambda^T A y) - lambda^T b
            value_c = lb.detach().double().cpu() - (lam.detach().double().cpu() * b).sum(2)
            better = value_c > best + 1e-9 * (1 + best.abs().nan_to_num(posinf=0.0, neginf=0.0))
            best = torch.where(better, value_c, best)
            best_dir = torch.where(better.unsqueeze(-1), direction.detach().double().cpu(), best_dir)
            best_lam = torch.where(better.unsqueeze(-1), lam.detach().cpu(), best_lam)
            if bool(((best > tol) | ~need).all()):
                break
            stall = 0 if bool((better & need).any()) else stall + 1
            if stall >= 4:
                break
            g = grad.masked_fill(~valid, 0.0)
            g = g / g.abs().amax(2, keepdim=True).clamp(min=1e-12)
            lam = _project_simplex(lam.detach() + (0.5 / math.sqrt(step + 1)) * g, valid)
        best_lam = torch.where(need.unsqueeze(-1), best_lam, torch.full_like(best_lam, -1.0))
        return best.masked_fill(~need, -math.inf), best_dir, best_lam

    # -- the search -------------------------------------------------------------------------------------
    def _search(self, cases: _Cases, deadline: Deadline, stats: _Stats, gen: torch.Generator) -> str:
        all_cases = torch.arange(cases.lower.shape[0])
        attackable = cases.has_points
        # 1. a quick attack on every case
        if attackable.any():
            idx = all_cases[attackable]
            self._check_points((cases.inner_lo[idx] + (cases.inner_hi[idx] - cases.inner_lo[idx]) / 2), idx,
                               cases, cases.disjuncts[idx])
            self._attack(cases.inner_lo[idx], cases.inner_hi[idx], idx, cases, cases.disjuncts[idx], steps=15,
                         restarts=1, gen=gen, deadline=deadline, stats=stats)
        # a box without float32 points (inputs fixed at values float32 cannot represent) whose real centre
        # clearly reaches the unsafe region can neither be proven safe nor given a float32 witness
        if not attackable.all():
            idx = all_cases[~attackable]
            centre = ((cases.lower[idx] + cases.upper[idx]) / 2).float()
            with torch.no_grad():
                y = self._forward(centre.to(self.device))
                v = self._violation(y, idx, cases, cases.disjuncts[idx]).cpu()
            if bool((v < -1e-4 * (1 + v.abs())).any()):
                return self._give_up(cases, deadline, stats, gen)
        # 2. bound every case, then split what stays open
        perturbed = (cases.upper > cases.lower).sum(1)
        splittable = bool((perturbed <= self.split_max_inputs).all())
        split_cost = 0.0  # measured seconds per box of the split scores
        queue_lo, queue_hi = [cases.lower], [cases.upper]
        queue_c, queue_open = [all_cases], [cases.disjuncts.clone()]
        queue_lam = [torch.full(cases.rows.shape, -1.0)]  # row weights to warm-start each box with
        first = True
        batches = 0
        per_box = 0.0  # measured seconds per box of a whole iteration (bounds, lambda, split scores)
        while queue_lo:
            lo_all, hi_all = torch.cat(queue_lo), torch.cat(queue_hi)
            c_all, open_all, lam_all = torch.cat(queue_c), torch.cat(queue_open), torch.cat(queue_lam)
            take = min(self.batch_boxes, lo_all.shape[0])
            if per_box:  # never start a batch the measured cost says cannot finish in time
                fits = deadline.remaining() / per_box
                if fits < 1:
                    raise _OutOfTime
                take = int(min(take, fits))
            t_batch = time.perf_counter()
            lo, hi, cidx, open_mask = lo_all[-take:], hi_all[-take:], c_all[-take:], open_all[-take:]
            rest = lo_all.shape[0] - take
            queue_lo, queue_hi = ([lo_all[:rest]], [hi_all[:rest]]) if rest else ([], [])
            queue_c, queue_open = ([c_all[:rest]], [open_all[:rest]]) if rest else ([], [])
            lam_init, queue_lam = lam_all[-take:], ([lam_all[:rest]] if rest else [])
            if deadline.passed():
                raise _OutOfTime
            margin, direction, lam = self._bound_boxes(lo, hi, cidx, cases, open_mask, deadline, stats,
                                                       lam_init)
            lam = lam_init if lam is None else lam
            batches += 1
            worst = margin.amin(1)
            if first:
                stats.root_margin = float(worst.min())
                first = False
            proven = worst > 0
            if proven.any():
                stats.leaf_margin = min(stats.leaf_margin, float(worst[proven].min()))
            if proven.all():
                per_box = max(per_box, (time.perf_counter() - t_batch) / take)
                continue
            if not splittable:
                return self._give_up(cases, deadline, stats, gen)
            todo = (~proven).nonzero().squeeze(1)
            lo, hi, cidx = lo[todo], hi[todo], cidx[todo]
            still_open = open_mask[todo] & ~(margin[todo] > 0)
            width = hi - lo
            if bool((width.amax(1) <= 1e-9 * (1 + hi.abs().amax(1))).any()):
                return self._give_up(cases, deadline, stats, gen)  # cannot split further
            if deadline.remaining() < split_cost * todo.numel():
                raise _OutOfTime
            t_split = time.perf_counter()
            score = self._split_scores(lo, hi, direction[todo]).masked_fill(width <= 0, 0.0)
            split_cost = max(0.5 * split_cost, (time.perf_counter() - t_split) / todo.numel())
            score = torch.where(score.amax(1, keepdim=True) > 0, score, width)
            dim = score.argmax(1)
            rows = torch.arange(todo.numel())
            mid = (lo[rows, dim] + hi[rows, dim]) / 2
            left_hi, right_lo = hi.clone(), lo.clone()
            left_hi[rows, dim], right_lo[rows, dim] = mid, mid
            queue_lo += [lo, right_lo]
            queue_hi += [left_hi, hi]
            queue_c += [cidx, cidx]
            queue_open += [still_open, still_open]
            queue_lam += [lam[todo], lam[todo]]
            per_box = max(0.5 * per_box, (time.perf_counter() - t_batch) / take)
            if batches % 8 == 0:  # a deep search may be hiding a counterexample: attack the worst boxes
                pick = worst[todo].argsort()[:16]
                ilo, ihi = _f32_up(lo[pick].numpy()), _f32_down(hi[pick].numpy())
                ok = torch.from_numpy((ilo <= ihi).all(1))
                if ok.any():
                    self._attack(torch.from_numpy(ilo)[ok], torch.from_numpy(ihi)[ok], cidx[pick][ok], cases,
                                 still_open[pick][ok], steps=10, restarts=1, gen=gen, deadline=deadline,
                                 stats=stats)
        return UNSAT

    def _split_scores(self, lo: Tensor, hi: Tensor, direction: Tensor) -> Tensor:
        """How much splitting each input coordinate should help, for boxes ``(N, n)``: the sensitivity of the
        dual bound of ``direction . f`` to each coordinate's radius, ``|d lb / d r_i| * r_i`` (this accounts
        for the intermediate relaxations too, unlike a gradient of the network)."""
        center, radius = dual_box(lo.numpy(), hi.numpy())
        c = torch.from_numpy(center).reshape(-1, *self.example_shape).to(self.device)
        r = torch.from_numpy(radius).reshape(-1, *self.example_shape).to(self.device).requires_grad_(True)
        with torch.enable_grad():
            rows = direction.to(self.device, torch.float32).unsqueeze(1)
            lb = DualNetwork(self.net, c, r).lower_bound(rows)
            (g,) = torch.autograd.grad(lb.sum(), r)
        return (g.abs() * r.detach()).reshape(lo.shape[0], -1).double().cpu()

    def _give_up(self, cases: _Cases, deadline: Deadline, stats: _Stats, gen: torch.Generator) -> str:
        """Bounds cannot decide: stronger attacks with a bounded budget, else ``unknown``. First on every
        case at once, then targeted: each conjunction of each case attacked on its own (the minimum over
        conjunctions sends the gradient to one of them only)."""
        idx = torch.arange(cases.lower.shape[0])[cases.has_points]
        if not idx.numel():
            return UNKNOWN
        self._attack(cases.inner_lo[idx], cases.inner_hi[idx], idx, cases, cases.disjuncts[idx], steps=50,
                     restarts=4, gen=gen, deadline=deadline, stats=stats)
        pairs = cases.disjuncts[idx].nonzero()  # (case position, conjunction)
        if pairs.shape[0] > 1:
            for chunk in pairs.split(64):
                cidx = idx[chunk[:, 0]]
                target = torch.zeros((chunk.shape[0], cases.disjuncts.shape[1]), dtype=torch.bool)
                target[torch.arange(chunk.shape[0]), chunk[:, 1]] = True
                self._attack(cases.inner_lo[cidx], cases.inner_hi[cidx], cidx, cases, target, steps=50,
                             restarts=2, gen=gen, deadline=deadline, stats=stats)
        return UNKNOWN


def _project_simplex(v: Tensor, valid: Tensor) -> Tensor:
    """Euclidean projection of each ``v[..., :]`` onto the probability simplex over its ``valid`` entries
    (the others are 0)."""
    k = v.shape[-1]
    masked = v.masked_fill(~valid, -math.inf)
    u, _ = masked.sort(-1, descending=True)
    u = torch.where(torch.isfinite(u), u, torch.zeros_like(u))
    css = u.cumsum(-1) - 1
    ks = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    count = valid.sum(-1, keepdim=True)
    cond = (u - css / ks > 0) & (ks <= count)
    rho = cond.to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)
    rho = torch.where(cond.any(-1, keepdim=True), rho, torch.zeros_like(rho))
    theta = torch.gather(css, -1, rho) / (rho + 1).to(v.dtype)
    return torch.clamp(v - theta, min=0).masked_fill(~valid, 0.0)


# ------------------------------------------------------------------ VNN-LIB 2.0: declarations and checks

#: VNN-LIB spelling of the element types (the ONNX IR names, plus the extra ``Real``)
_VNNLIB_TYPES = {
    "Real": "Real", "F16": "float16", "F32": "float32", "F64": "float64", "BF16": "bfloat16",
    "F8E4M3FN": "float8e4m3fn", "F8E5M2": "float8e5m2", "F8E4M3FNUZ": "float8e4m3fnuz",
    "F8E5M2FNUZ": "float8e5m2fnuz", "F4E2M1": "float4e2m1", "I8": "int8", "I16": "int16", "I32": "int32",
    "I64": "int64", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64", "C64": "complex64",
    "C128": "complex128", "Bool": "bool", "String": "string",
}
#: ONNX ``TensorProto`` type names (lower case) -> VNN-LIB spelling
_ONNX_TO_VNNLIB = {"float": "float32", "double": "float64", "float16": "float16", "bfloat16": "bfloat16",
                   "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64", "uint8": "uint8",
                   "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool",
                   "string": "string", "complex64": "complex64", "complex128": "complex128"}


def vnnlib_type(onnx_type: str) -> str:
    """The VNN-LIB name of an ONNX element type name (``"float"`` -> ``"float32"``)."""
    return _ONNX_TO_VNNLIB.get(onnx_type, onnx_type)


@dataclass(frozen=True)
class DeclaredVariable:
    name: str
    element_type: str  # VNN-LIB spelling: "Real", "float32", ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class DeclaredNetwork:
    """A ``declare-network`` of a VNN-LIB 2.0 query."""

    name: str
    inputs: tuple[DeclaredVariable, ...]
    hidden: tuple[DeclaredVariable, ...]
    outputs: tuple[DeclaredVariable, ...]
    equal_to: str | None = None
    isomorphic_to: str | None = None

    @property
    def variables(self) -> tuple[DeclaredVariable, ...]:
        return self.inputs + self.hidden + self.outputs


def declared_networks(text: str, source: str = "<string>") -> list[DeclaredNetwork]:
    """The network declarations of a VNN-LIB 2.0 query in declaration order (``[]`` for a 1.0 file).
    Raises :class:`~onnxdual.specs.SpecError` for a query the reference parser rejects."""
    from onnxdual.specs import SpecError, detect_version

    if detect_version(text) != "2.0":
        return []
    try:
        import vnnlib

        from onnxdual.specs.vnnlib2 import _reference_error, prepare_text
    except ImportError as exc:  # pragma: no cover - vnnlib is a declared dependency
        raise SpecError(f"{source}: VNN-LIB 2.0 files need the 'vnnlib' package ({exc})") from None
    try:
        query = vnnlib.parse_query_string(prepare_text(text))
    except vnnlib.VNNLibException as exc:
        raise _reference_error(source, exc) from None

    def var(v) -> DeclaredVariable:
        kind = str(v.dtype).split(".")[-1]
        if kind == "Unknown":  # the reference parser (vnnlib 1.0.2) types a declared Real as Unknown
            kind = "Real"
        return DeclaredVariable(v.name, _VNNLIB_TYPES.get(kind, kind.lower()), tuple(int(d) for d in v.shape))

    out = []
    for n in query.networks:
        out.append(DeclaredNetwork(n.name, tuple(map(var, n.inputs)), tuple(map(var, n.hidden)),
                                   tuple(map(var, n.outputs)), n.equal_to or None,
                                   getattr(n, "isometric_to", None) or None))
    return out


def match_networks(declared: list[DeclaredNetwork], given: list[tuple[str | None, str]],
                   source: str = "the query") -> dict[str, str]:
    """Map each network the query needs to its ONNX file (error condition 1 of the standard's ``verify``
    command: insufficient or unnecessary model files). ``given``: ``(name or None, path)`` pairs from
    ``--network NAME=PATH``. A 1.0 query (``declared == []``) needs exactly one file, under any name."""
    names = [n for n, _ in given]
    duplicates = sorted({n for n in names if n is not None and names.count(n) > 1})
    if duplicates:
        raise QueryError(f"--network {duplicates[0]}=... is given more than once", condition=1)
    if not declared:
        if len(given) != 1:
            raise QueryError(f"{source} is a VNN-LIB 1.0 property of one network; {len(given)} model files "
                             "were given (use one --network NAME=MODEL.onnx)", condition=1)
        return {given[0][0] or "N": given[0][1]}
    needed = [n.name for n in declared if n.equal_to is None]
    if len(given) == 1 and given[0][0] is None and len(needed) == 1:
        return {needed[0]: given[0][1]}
    if any(n is None for n in names):
        raise QueryError(f"{source} declares networks {', '.join(needed)}: give each as "
                         "--network NAME=MODEL.onnx", condition=1)
    missing = [n for n in needed if n not in names]
    extra = [n for n in names if n not in needed]
    if missing or extra:
        parts = []
        if missing:
            plural = "s" if len(missing) > 1 else ""
            parts.append(f"no model file for network{plural} " + ", ".join(missing))
        if extra:
            known = {n.name for n in declared}
            why = {n: "declared equal-to another network" if n in known else "not declared" for n in extra}
            parts.append(", ".join(f"{n!r} ({why[n]})" for n in extra) + " given but not needed")
        raise QueryError(f"{source}: " + "; ".join(parts), condition=1)
    return {n: p for n, p in given}


def check_element_types(declared: list[DeclaredNetwork], networks: dict[str, Network], *, strict: bool,
                        source: str = "the query") -> list[str]:
    """Error conditions 2 and 3 of the standard's ``verify`` command. Returns notes for stderr.

    * condition 2: a declared ONNX element type differs from the model's (``Real`` matches anything);
    * condition 3: onnxdual's analysis is real arithmetic (sat answers are confirmed in float32 by
      onnxruntime; proofs are not float-exact), so only ``Real`` is sound. ``float32`` declarations are
      analysed as ``Real`` with a note, unless ``strict``, where they are refused as the standard requires;
      every other type is refused."""
    notes = []
    for decl in declared:
        net = networks.get(decl.name) or networks.get(decl.equal_to or "")
        if net is None:
            continue
        model_types = [vnnlib_type(net.input_type)] * len(decl.inputs) + \
                      [vnnlib_type(net.output_type)] * len(decl.outputs)
        for v, model_type in zip(decl.inputs + decl.outputs, model_types):
            if v.element_type != "Real" and v.element_type != model_type:
                raise QueryError(f"{source}: {v.name} of network {decl.name} is declared {v.element_type} "
                                 f"but the model's tensor is {model_type}", condition=2)
    as_real = []
    for decl in declared:
        for v in decl.variables:
            if v.element_type == "Real":
                continue
            if v.element_type == "float32" and not strict:
                as_real.append(v.name)
                continue
            raise QueryError(f"{source}: {v.name} is declared {v.element_type}, which onnxdual cannot "
                             "analyse soundly (its proofs hold in real arithmetic); declare it Real to "
                             "accept that", condition=3)
    if as_real:
        notes.append(f"{', '.join(as_real)} declared float32: analysed in real arithmetic (sat answers are "
                     "checked in float32); --strict refuses non-Real types as the standard requires")
    return notes


# ------------------------------------------------------------------------------------ assignment formats


def _value_text(v: float) -> str:
    return repr(float(v))


def assignment_variables(prop, declared: list[DeclaredNetwork]) -> list[DeclaredVariable]:
    """The variables of a satisfying assignment in declaration order: the network's input then output
    (VNN-LIB 2.0), or for a 1.0 file the declared constants ``X_i`` then ``Y_j`` (scalars of type Real)."""
    if declared:
        net = declared[0]
        return [net.inputs[0], net.outputs[0]]
    return ([DeclaredVariable(f"X_{i}", "Real", ()) for i in range(prop.n_inputs)]
            + [DeclaredVariable(f"Y_{j}", "Real", ()) for j in range(prop.n_outputs)])


def _split_values(variables: list[DeclaredVariable], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    flat = np.concatenate([np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)])
    out, start = [], 0
    for v in variables:
        n = math.prod(v.shape)
        out.append(flat[start:start + n])
        start += n
    if start != flat.size:
        raise InvalidInputError(f"the assignment has {flat.size} values but the variables need {start}")
    return out


def format_assignment(variables: list[DeclaredVariable], x: np.ndarray, y: np.ndarray) -> str:
    """The standard's command-line assignment format (VNN-LIB 2.0, chapter 5): for each variable a line
    ``NAME TYPE [d1,d2,...]`` and then one line per element in row-major order. No trailing newline."""
    lines = []
    for v, values in zip(variables, _split_values(variables, x, y)):
        lines.append(f"{v.name} {v.element_type} [{','.join(str(d) for d in v.shape)}]")
        lines.extend(_value_text(a) for a in values)
    return "\n".join(lines)


def serialise_assignment(directory: str | os.PathLike, variables: list[DeclaredVariable], x: np.ndarray,
                         y: np.ndarray) -> list[Path]:
    """The standard's serialised format: ``DIR/NAME.pb``, a serialised ONNX ``TensorProto`` per variable with
    its declared shape (float32: the values are float32 inputs and onnxruntime's float32 outputs; ``Real``
    variables are written as float32 too, exactly)."""
    from onnx import numpy_helper

    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"cannot create assignment directory {str(out)!r}: "
                                f"{exc.strerror or exc}") from None
    paths = []
    for v, values in zip(variables, _split_values(variables, x, y)):
        dtype = np.float64 if v.element_type == "float64" else np.float32
        tensor = numpy_helper.from_array(values.astype(dtype).reshape(v.shape), name=v.name)
        path = out / f"{v.name}.pb"
        try:
            path.write_bytes(tensor.SerializeToString())
        except OSError as exc:
            raise InvalidInputError(f"cannot write {path}: {exc.strerror or exc}") from None
        paths.append(path)
    return paths
