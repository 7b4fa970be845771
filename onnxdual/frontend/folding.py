"""Constant folding before conversion: every value of the graph that does not depend on the *values* of the
network input becomes an initializer, so exporters' shape arithmetic never needs a dual layer.

The legacy exporter writes ``x.view(x.size(0), -1)`` as ``Shape -> Gather -> Unsqueeze -> Concat ->
Reshape``; other exporters add ``ConstantOfShape``, ``Range``, ``Cast``, ``Equal``/``Where`` on constants,
``Expand`` of constants. A value is *data-dependent* when it is computed from the network input by an
operator other than ``Shape``/``Size`` (which read only the shape); every other value that feeds a
data-dependent node is evaluated once with onnxruntime (:class:`~onnxdual.frontend.reference.
ReferenceSession`) and written as an initializer, and the nodes that only served it are dropped.

A value may still depend on the *batch size* (``Shape(x)[0]``). With a free batch dimension the graph is
evaluated at two batch sizes: a value equal at both is a constant; a ``Reshape`` target that differs exactly
in its first entry, which equals the batch size at both, gets ``0`` there (copy the batch dimension,
``allowzero = 0``); anything else that depends on the batch stays as it is (and is reported as an
unsupported operator if it needs a dual layer), except a value that is one constant repeated for every
example (a class token expanded to the batch): it keeps a batch dimension of 1 where its consumers
broadcast, and a ``Concat`` of it becomes zero-padded values plus the constants. Non-batch dimensions of the
input must be static for folding through ``Shape``; otherwise only values that do not depend on the input
at all are folded.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxdual.frontend.lowering import inferred_shapes
from onnxdual.frontend.reader import copy_model, graph_inputs
from onnxdual.frontend.reference import ReferenceSession

#: operators whose output depends only on the shape of their input, not its values
SHAPE_ONLY_OPS = ("Shape", "Size")
#: operators whose value is drawn anew on every run: never folded (nor what depends on them)
RANDOM_OPS = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
              "Multinomial")
#: batch sizes a free batch dimension is evaluated at (two, to tell batch-dependent values apart)
PROBE_BATCHES = (2, 3)


def data_dependent(model: onnx.ModelProto) -> set[str]:
    """Names of the values computed from the network input's values (the input included) or drawn at random
    (which no single evaluation may stand for)."""
    dependent = set(graph_inputs(model))
    for node in model.graph.node:
        default = node.domain in ("", "ai.onnx")
        if node.op_type in SHAPE_ONLY_OPS and default:
            continue
        if (node.op_type in RANDOM_OPS and default) or any(name in dependent for name in node.input if name):
            dependent.update(o for o in node.output if o)
    return dependent


def _input_dims(model: onnx.ModelProto) -> list[int | None]:
    name = graph_inputs(model)[0]
    info = next(v for v in model.graph.input if v.name == name)
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in info.type.tensor_type.shape.dim]


def _frontier(model: onnx.ModelProto, dependent: set[str]) -> dict[str, list[tuple[int, int]]]:
    """Values computed by nodes (not initializers, not ``Constant`` nodes) that are not data-dependent but
    feed a data-dependent node, with their consumers as ``(node index, input position)``."""
    produced = {o: n for n in model.graph.node if n.op_type != "Constant" for o in n.output if o}
    out: dict[str, list[tuple[int, int]]] = {}
    for i, node in enumerate(model.graph.node):
        if not any(o in dependent for o in node.output):
            continue
        for position, name in enumerate(node.input):
            if name and name not in dependent and name in produced:
                out.setdefault(name, []).append((i, position))
    return out


def _evaluate(model: onnx.ModelProto, names: list[str], shape: list[int]) -> dict[str, np.ndarray]:
    probe = copy_model(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(n, types[n], None) for n in names)
    session = ReferenceSession(probe.SerializeToString(), "the constant part of the graph")
    x = np.zeros(shape, dtype=np.float32)
    return dict(zip(names, session.run(names, {session.input_name: x})))


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every foldable value an initializer (see the module docstring); the model itself when
    there is nothing to fold or the graph cannot be evaluated (the caller then reports what is missing)."""
    inputs = graph_inputs(model)
    if len(inputs) != 1 or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                               for n in model.graph.node for a in n.attribute):
        return model  # several inputs, or subgraphs (If, Loop, Scan) that read outer values: left alone
    dependent = data_dependent(model)
    frontier = _frontier(model, dependent)
    if not frontier:
        return model
    dims = _input_dims(model)
    free_batch = bool(dims) and dims[0] is None
    static = all(d is not None for d in dims[1:]) and (free_batch or all(d is not None for d in dims))
    if not static:  # only values independent of the input as a whole (not even through Shape)
        reachable = set(inputs)
        for node in model.graph.node:
            if any(name in reachable for name in node.input if name):
                reachable.update(o for o in node.output if o)
        frontier = {k: v for k, v in frontier.items() if k not in reachable}
        if not frontier:
            return model
    batches = PROBE_BATCHES if free_batch else (dims[0] if dims else None,)
    try:
        runs = [_evaluate(model, list(frontier), ([b] if b is not None else []) + [d or 1 for d in dims[1:]])
                for b in batches]
    except Exception:  # noqa: BLE001 - best effort: an unevaluable graph is left for the checks to report
        return model
    out = _fold(model, frontier, runs, batches, per_example=free_batch)
    return out if out is not None else _fold(model, frontier, runs, batches, per_example=False)


def _fold(model: onnx.ModelProto, frontier: dict[str, list[tuple[int, int]]],
          runs: list[dict[str, np.ndarray]], batches: tuple, per_example: bool) -> onnx.ModelProto | None:
    """The model with the foldable frontier values as initializers (the model itself if none); None when a
    Concat of a per-example constant could not be rewritten (the caller folds again without those)."""
    out = copy_model(model)
    folded: set[str] = set()
    concats: dict[int, dict[int, np.ndarray]] = {}  # Concat node -> its per-example constant inputs
    for name, consumers in frontier.items():
        values = [r[name] for r in runs]
        if all(v.shape == values[0].shape and np.array_equal(v, values[0]) for v in values):
            value = values[0]
        else:
            value = _batch_copy_target(model, consumers, values, batches)
            if value is None:
                value = _per_example(model, consumers, values, batches) if per_example else None
                if value is None:
                    continue
                for i, position in consumers:
                    if model.graph.node[i].op_type == "Concat":
                        concats.setdefault(i, {})[position] = value
        init = f"{name}__onnxdual_folded"
        out.graph.initializer.append(numpy_helper.from_array(np.asarray(value), init))
        for i, position in consumers:
            out.graph.node[i].input[position] = init
        folded.add(name)
    if concats and not concats_as_pads(out, concats):
        return None
    return _prune(out) if folded else model


#: operators that broadcast their inputs numpy-style: a per-example constant may lose its batch dimension
BROADCASTING_OPS = ("Add", "Sub", "Mul", "Div", "Where", "Max", "Min", "Sum", "Mean", "Pow", "Equal")


def _per_example(model: onnx.ModelProto, consumers: list[tuple[int, int]], values: list[np.ndarray],
                 batches: tuple) -> np.ndarray | None:
    """A value that is one constant repeated for every example (``cls_token.expand(x.size(0), -1, -1)``)
    as that constant with a batch dimension of 1, where every consumer broadcasts it or is a Concat (see
    `concats_as_pads`); None otherwise."""
    if any(model.graph.node[i].op_type not in BROADCASTING_OPS + ("Concat",) for i, _ in consumers):
        return None
    if any(v.ndim == 0 or v.shape[0] != b or v.shape[1:] != values[0].shape[1:]
           for v, b in zip(values, batches)):
        return None
    row = values[0][:1]
    if any(not np.array_equal(v, np.broadcast_to(row, v.shape)) for v in values):
        return None
    return row


def concats_as_pads(model: onnx.ModelProto, concats: dict[int, dict[int, np.ndarray]],
                    shapes: dict[str, list[int]] | None = None) -> bool:
    """``Concat`` of network values and per-example constants ``c`` (by input position, with a batch
    dimension of 1) along a per-example axis, written as ``Pad(x_1) + ... + Pad(x_k) + C``: each value
    zero-padded into its place, ``C`` the constants in theirs (zeros elsewhere, batch dimension 1, broadcast
    by ``Add``); the same function for every batch size, from operators with dual layers. ``shapes``: the
    values' shapes with their batch dimension (default: shape inference on ``model``). False (and the model
    half-rewritten) when some sizes are unknown."""
    shapes = inferred_shapes(model) if shapes is None else shapes
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    for i, constants in concats.items():
        node = model.graph.node[i]
        rank = next(iter(constants.values())).ndim
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        axis = axis + rank if axis < 0 else axis
        inits = {t.name: t for t in model.graph.initializer}
        sizes = []
        for position, name in enumerate(node.input):
            if position in constants or name in inits:
                array = constants.get(position)
                sizes.append((array if array is not None else numpy_helper.to_array(inits[name])).shape[axis])
            else:
                shape = shapes.get(name, [])
                sizes.append(shape[axis] if len(shape) == rank and shape[axis] > 0 else 0)
        if not 0 < axis < rank or min(sizes) <= 0:
            return False
        template = next(iter(constants.values()))
        total = sum(sizes)
        block = np.zeros((1, *template.shape[1:axis], total, *template.shape[axis + 1:]),
                         dtype=template.dtype)
        label = f"{node.name or node.output[0]}__onnxdual_concat"
        nodes, terms, start = [], [], 0
        for position, (name, size) in enumerate(zip(node.input, sizes)):
            if position in constants or name in inits:
                array = constants.get(position)
                array = array if array is not None else numpy_helper.to_array(inits[name])
                index = [slice(None)] * rank
                index[axis] = slice(start, start + size)
                block[tuple(index)] = array
            else:
                pads = [0] * (2 * rank)
                pads[axis], pads[rank + axis] = start, total - start - size
                padded = f"{label}_pad{position}"
                if opset < 11:
                    nodes.append(helper.make_node("Pad", [name], [padded], name=padded, pads=pads))
                else:
                    model.graph.initializer.append(
                        numpy_helper.from_array(np.array(pads, np.int64), f"{padded}_pads"))
                    nodes.append(helper.make_node("Pad", [name, f"{padded}_pads"], [padded], name=padded))
                terms.append(padded)
            start += size
        if not terms:
            return False
        model.graph.initializer.append(numpy_helper.from_array(block, f"{label}_constants"))
        terms.append(f"{label}_constants")
        for k in range(1, len(terms)):
            out = node.output[0] if k == len(terms) - 1 else f"{label}_sum{k}"
            left = terms[0] if k == 1 else f"{label}_sum{k - 1}"
            nodes.append(helper.make_node("Add", [left, terms[k]], [out], name=f"{label}_add{k}"))
        replaced[i] = nodes
    kept = []
    for i, node in enumerate(model.graph.node):
        kept.extend(replaced.get(i, [node]))
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return True


def _batch_copy_target(model: onnx.ModelProto, consumers: list[tuple[int, int]], values: list[np.ndarray],
                       batches: tuple) -> np.ndarray | None:
    """A Reshape target that is the batch size in its first entry and constant elsewhere, with that entry
    ``0`` (copy the batch); None when the value is not exactly that."""
    for i, position in consumers:
        node = model.graph.node[i]
        allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
        if node.op_type != "Reshape" or position != 1 or allowzero:
            return None
    if any(v.ndim != 1 or v.shape != values[0].shape or not v.size for v in values):
        return None
    if any(int(v[0]) != b for v, b in zip(values, batches)):
        return None
    if any(not np.array_equal(v[1:], values[0][1:]) for v in values):
        return None
    target = values[0].astype(np.int64)
    target[0] = 0
    return target


def _prune(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop nodes (and initializers) no graph output needs any more."""
    needed = {o.name for o in model.graph.output}
    keep = []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(name for name in node.input if name)
    del model.graph.node[:]
    model.graph.node.extend(reversed(keep))
    declared = {v.name for v in model.graph.input}  # an initializer listed as an input stays (IR < 4)
    initializers = [t for t in model.graph.initializer if t.name in needed or t.name in declared]
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    return model
