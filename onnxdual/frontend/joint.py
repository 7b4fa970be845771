"""The joint network of a VNN-LIB 2.0 query over several networks, tensors, hidden nodes or products of
variables: one ONNX model with one input and one output whose property is the query's (the layout is
:class:`onnxdual.specs.joint.JointLayout`; its docstring says what the input and output hold).

Each declared network's graph is copied in under a name prefix of its own (a network declared ``equal-to``
another runs a second copy of that model); its inputs are read from the joint input with ``Gather`` +
``Reshape``; its declared outputs and hidden nodes are flattened and concatenated; each product term is a
``Gather`` of its factors from (joint input, outputs, hidden nodes) and a chain of ``Mul``. Only operators
with exact duals are added (``Mul`` of two variables excepted, which the bilinear dual relaxes soundly), so
the joint network computes exactly the query's variables.

Either every network's inputs have a leading batch dimension (1 or symbolic; the joint input is then
``[N, n]``, a batch of examples) or none has (the joint input is ``[n]``, and
:func:`onnxdual.frontend.rewrites.add_batch_axis` treats the joint model as any unbatched one); mixing both
is refused.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxdual.errors import ModelLoadError
from onnxdual.frontend.reader import graph_inputs

#: the joint model's input and output names (no prefixed name of a copied network can take them)
INPUT, OUTPUT = "onnxdual_joint_input", "onnxdual_joint_output"


def _dims(value_info) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value_info.type.tensor_type.shape.dim]


def _is_batched(dims: list[int | None]) -> bool:
    return len(dims) >= 2 and dims[0] in (1, None)


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _renamed_graph(model: onnx.ModelProto, prefix: str) -> onnx.GraphProto:
    """The model's graph with every tensor and node name prefixed (initializers included)."""
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)

    def rename(name: str) -> str:
        return prefix + name if name else name

    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ModelLoadError(f"{node.op_type} has a subgraph: a network with control flow cannot be part "
                                 "of a joint query")
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        node.name = rename(node.name)
    for t in graph.initializer:
        t.name = rename(t.name)
    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        v.name = rename(v.name)
    return graph


def _matched(declared, available: list[str], what: str, network: str) -> list[str]:
    """The model tensor of each declared tensor: by ONNX name where the query gives one, else by position."""
    if len(declared) != len(available):
        raise ModelLoadError(f"network {network} declares {len(declared)} {what} but its model has "
                             f"{len(available)}")
    return [t.onnx_name or name for t, name in zip(declared, available)]


def joint_model(layout, models: dict[str, onnx.ModelProto]) -> onnx.ModelProto:
    """The joint ONNX model of ``layout`` (a :class:`~onnxdual.specs.joint.JointLayout`); ``models`` maps each
    network that has a model file to its model. Raises :class:`ModelLoadError` where the models do not fit
    the declarations (counts, sizes, opsets, batch dimensions)."""
    opsets = {_default_opset(models[n.model]) for n in layout.networks}
    if len(opsets) != 1:
        raise ModelLoadError(f"the networks of a joint query must share one opset (got {sorted(opsets)})")
    opset = opsets.pop()
    if opset < 5:
        raise ModelLoadError(f"a joint query needs opset 5 or later (Reshape with a shape input): {opset}")
    inferred = {}
    for name in {n.model for n in layout.networks}:
        try:
            inferred[name] = onnx.shape_inference.infer_shapes(models[name])
        except Exception:  # noqa: BLE001 - sizes are then checked against onnxruntime only
            inferred[name] = models[name]
    in_dims = {}
    for n in layout.networks:
        m = models[n.model]
        infos = {v.name: v for v in m.graph.input}
        for t, name in zip(n.inputs, _matched(n.inputs, graph_inputs(m), "inputs", n.name)):
            if name not in infos:
                raise ModelLoadError(f"network {n.name}: its model has no input {name!r} (input {t.name})")
            in_dims[(n.name, t.name)] = _dims(infos[name])
    kinds = {_is_batched(d) for d in in_dims.values()}
    if len(kinds) != 1:
        raise ModelLoadError("the networks of a joint query must all have a leading batch dimension or none")
    batched = kinds.pop()
    axis = 1 if batched else 0

    nodes, inits, counter = [], [], [0]

    def const(array, dtype=np.int64) -> str:
        counter[0] += 1
        name = f"onnxdual_joint_c{counter[0]}"
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def add(op, inputs, out=None, **attrs) -> str:
        counter[0] += 1
        out = out or f"onnxdual_joint_v{counter[0]}"
        nodes.append(helper.make_node(op, inputs, [out], name=f"onnxdual_joint_n{counter[0]}", **attrs))
        return out

    def flat(name: str) -> str:
        return add("Flatten", [name], axis=1) if batched else add("Reshape", [name, const([-1])])

    graph_inits, outputs, hidden = [], [], []
    start = 0
    for k, n in enumerate(layout.networks):
        m = models[n.model]
        prefix = f"onnxdual_joint{k}_{n.name}__"
        graph = _renamed_graph(m, prefix)
        for t, name in zip(n.inputs, _matched(n.inputs, graph_inputs(m), "inputs", n.name)):
            dims = in_dims[(n.name, t.name)]
            size = math.prod(d or 1 for d in dims)
            if size != t.size:
                raise ModelLoadError(f"network {n.name}: input {t.name} has {t.size} elements but the "
                                     f"model's {name!r} has {size}")
            picked = add("Gather", [INPUT, const(np.arange(start, start + size))], axis=axis)
            shape = [-1] + [d or 1 for d in dims[1:]] if batched else [d or 1 for d in dims]
            add("Reshape", [picked, const(shape)], out=prefix + name)
            start += size
        nodes.extend(graph.node)  # after its inputs, before what reads its outputs (topological order)
        graph_inits.extend(graph.initializer)
        known = _known_sizes(inferred[n.model])
        model_outputs = [v.name for v in m.graph.output]
        for t, name in zip(n.outputs, _matched(n.outputs, model_outputs, "outputs", n.name)):
            outputs.append(flat(_checked(prefix, name, t, known, n.name, "output")))
        produced = {o for node in m.graph.node for o in node.output} | set(graph_inputs(m))
        for t in n.hidden:
            if t.onnx_name not in produced:
                raise ModelLoadError(f"network {n.name}: hidden node {t.name} names {t.onnx_name!r}, "
                                     "which is not a tensor of its model")
            hidden.append(flat(_checked(prefix, t.onnx_name, t, known, n.name, "hidden node")))

    base = add("Concat", outputs + hidden, axis=axis) if len(outputs + hidden) > 1 else (outputs + hidden)[0]
    result = base
    if layout.terms:
        values = add("Concat", [INPUT, base], axis=axis)
        by_degree: dict[int, list[int]] = {}
        for k, term in enumerate(layout.terms):
            by_degree.setdefault(len(term), []).append(k)
        parts, order = [], []
        for degree, ks in sorted(by_degree.items()):
            product = None
            for p in range(degree):
                factor = add("Gather", [values, const([layout.terms[k][p] for k in ks])], axis=axis)
                product = factor if product is None else add("Mul", [product, factor])
            parts.append(product)
            order.extend(ks)
        terms = add("Concat", parts, axis=axis) if len(parts) > 1 else parts[0]
        if order != sorted(order):
            terms = add("Gather", [terms, const(np.argsort(order))], axis=axis)
        result = add("Concat", [base, terms], axis=axis)
    add("Identity", [result], out=OUTPUT)

    n_in, n_out = layout.n_inputs, layout.n_outputs
    graph = helper.make_graph(
        nodes, "onnxdual_joint",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", n_in] if batched else [n_in])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", n_out] if batched else [n_out])],
        graph_inits + inits)
    imports = {}
    for n in layout.networks:
        for o in models[n.model].opset_import:
            imports[o.domain] = max(imports.get(o.domain, 0), o.version)
    joint = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in imports.items()])
    joint.ir_version = max(models[n.model].ir_version for n in layout.networks)
    return joint


def _known_sizes(model: onnx.ModelProto) -> dict[str, int]:
    out = {}
    for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        dims = _dims(v)
        if v.type.tensor_type.HasField("shape") and all(d is not None for d in dims):
            out[v.name] = math.prod(dims)
    return out


def _checked(prefix: str, name: str, declared, known: dict[str, int], network: str, what: str) -> str:
    size = known.get(name)
    if size is not None and size != declared.size:
        raise ModelLoadError(f"network {network}: {what} {declared.name} has {declared.size} elements but "
                             f"the model's {name!r} has {size}")
    return prefix + name


def read_joint(layout, paths: dict[str, str]) -> tuple[bytes, dict]:
    """:func:`joint_model` of the models in the files ``paths`` (network name -> ONNX file), serialised, and
    each model's :class:`~onnxdual.frontend.reader.Interface` (its element types)."""
    from onnxdual.frontend.reader import interface, read_model

    models = {name: read_model(path) for name, path in paths.items()}
    return joint_model(layout, models).SerializeToString(), {name: interface(m) for name, m in models.items()}
