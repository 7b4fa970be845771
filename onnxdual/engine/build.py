"""Building a dual network: one dual layer per graph node, through a dual-layer registry only.

The registry is a value (:class:`onnxdual.registry.Registry`): the one given, else the one the network was
loaded with (``onnxdual.load(path, registry=...)``), else the installed default. Each factory receives the
node in ONNX terms (:class:`~onnxdual.duals.base.NodeContext`: attributes, constant inputs by ONNX position,
opset and schema version); the torch module is only run.

Building runs the network once on a single example to learn every node's shape and to evaluate the
constant parts of the graph; it does not compute any bound (that is :mod:`onnxdual.engine.autodual`).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from onnxdual import registry as registries
from onnxdual.duals.base import ActivationDual, AffineDual, ConstantDual, DualLayer, NodeContext
from onnxdual.duals.multi import MultiInputActivation, PackDual
from onnxdual.errors import InvalidInputError, MissingOp, OnnxDualError, UnsupportedOpsError
from onnxdual.frontend.graph import Graph, GraphNode, ValueRef, build_graph


@dataclass(frozen=True)
class DualStep:
    """One variable node of the network with its dual layer."""

    node: GraphNode
    layer: DualLayer
    variable_inputs: tuple[str, ...]  # names of the values feeding the layer's variable inputs, in order
    output_shape: torch.Size
    input_shapes: tuple[torch.Size, ...] = ()  # per-example shapes of the variable inputs, in order


@dataclass(frozen=True)
class BuiltDual:
    """The dual network's structure: variable nodes in topological order, each with its dual layer."""

    graph: Graph
    steps: tuple[DualStep, ...]
    input_shape: torch.Size

    @property
    def last_activation(self) -> int:
        """Index of the last step that needs pre-activation bounds (-1 if none)."""
        idx = [i for i, s in enumerate(self.steps) if isinstance(s.layer, ActivationDual)]
        return idx[-1] if idx else -1

    @property
    def largest_value(self) -> int:
        """Elements per example of the largest value in the network (input included): sizes memory."""
        return max([math.prod(self.input_shape)] + [math.prod(s.output_shape) for s in self.steps])

    @property
    def output_shape(self) -> torch.Size:
        """Per-example shape of the network output."""
        return next(s.output_shape for s in self.steps if s.node.name == self.graph.output_name)

    def weights(self) -> list[Tensor]:
        """The trainable tensors the dual layers compute with (leaves that require a gradient: the
        network's parameters, as the layers hold them), each once."""
        found: dict[int, Tensor] = {}
        for step in self.steps:
            layer = step.layer
            ctx = getattr(layer, "ctx", None)
            candidates = list(vars(layer).values())
            if ctx is not None:
                candidates += [*ctx.inputs, *(ctx.module_args or ()), *ctx.module.parameters()]
            for t in candidates:
                if isinstance(t, Tensor) and t.is_leaf and t.requires_grad:
                    found.setdefault(id(t), t)
        return list(found.values())

    def consumers(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for step in self.steps:
            for name in step.variable_inputs:
                counts[name] = counts.get(name, 0) + 1
        return counts


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def build_dual(net: nn.Module, example: Tensor, registry: registries.Registry | None = None) -> BuiltDual:
    """Build (or reuse) the dual structure of ``net`` for inputs shaped like ``example`` ``(B, *shape)``
    with the dual layers of ``registry`` (None: the one ``net`` was loaded with, else the default)."""
    if registry is None:
        registry = getattr(net, "onnxdual_registry", None)
    if registry is None:
        registry = registries.default()
    key = (tuple(example.shape[1:]), example.dtype, example.device, registry)
    per_net = _CACHE.setdefault(net, {})
    if key not in per_net:
        per_net[key] = _build(net, example[:1].detach(), registry)
    return per_net[key]


class _OnnxValues:
    """The values of the ONNX graph by ONNX name during the build walk, and which depend on the input."""

    def __init__(self, net: nn.Module, input_name: str | None, x: Tensor):
        self.net, self.values, self.variable = net, {}, set()
        if input_name is not None:
            self.values[input_name] = x
            self.variable.add(input_name)

    def record(self, info, out: Tensor, variable: bool) -> None:
        if info.outputs and info.outputs[0]:
            self.values[info.outputs[0]] = out
            if variable:
                self.variable.add(info.outputs[0])

    def node_inputs(self, info) -> tuple[tuple, tuple, tuple[int, ...]]:
        """Per ONNX input: constant value (or None), per-example shape of a variable input (or None);
        and the variable positions."""
        inputs, shapes, variables = [], [], []
        for position, name in enumerate(info.inputs):
            value, shape = None, None
            if name in self.variable:
                shape = self.values[name].shape[1:]
                variables.append(position)
            elif position in info.constants:
                value = info.constants[position].resolve(self.net)
            elif name:
                value = self.values.get(name)
            inputs.append(value)
            shapes.append(shape)
        return tuple(inputs), tuple(shapes), tuple(variables)


def _build(net: nn.Module, x: Tensor, registry: registries.Registry) -> BuiltDual:
    graph = build_graph(net)
    values: dict[str, object] = {graph.input_name: x}
    variable = {graph.input_name}
    onnx_values = _OnnxValues(net, getattr(net, "onnxdual_input_name", None), x)
    steps: list[DualStep] = []
    missing: list[MissingOp] = []

    def arg_value(arg):
        return values[arg.name] if isinstance(arg, ValueRef) else arg

    with torch.no_grad():
        for node in graph.nodes:
            args = [arg_value(a) for a in node.args]
            kwargs = {k: arg_value(v) for k, v in node.kwargs.items()}
            try:
                out = node.module(*args, **kwargs)
            except Exception as exc:
                raise InvalidInputError(f"the network fails on inputs of shape {tuple(x.shape[1:])} at node "
                                        f"{node.info.name!r} ({node.info.op_type}): {exc}") from exc
            if isinstance(out, (tuple, list)):
                out = out[0]
            values[node.name] = out
            var_args = [a for a in node.args if isinstance(a, ValueRef) and a.name in variable]
            if any(isinstance(v, ValueRef) and v.name in variable for v in node.kwargs.values()):
                raise InvalidInputError(f"node {node.info.name!r}: keyword inputs that depend on the network "
                                        "input are not supported")
            onnx_values.record(node.info, out, bool(var_args))
            if not var_args:
                continue  # a constant part of the graph: evaluated above, needs no dual layer
            variable.add(node.name)
            info = node.info
            entry = registry.lookup(info.op_type, info.domain, info.since_version)
            if entry is None:
                missing.append(MissingOp(info.op_type, info.domain, info.opset, info.name))
                continue
            inputs, input_shapes, variables = onnx_values.node_inputs(info)
            if len(variables) != len(var_args):
                raise InvalidInputError(f"node {info.name!r} ({info.op_type}): its ONNX inputs and the "
                                        "converted module's arguments disagree on which depend on the input")
            ctx = NodeContext(
                name=info.name, op_type=info.op_type, domain=info.domain, opset=info.opset,
                attributes=info.attributes, module=node.module, inputs=inputs, input_shapes=input_shapes,
                output_shape=out.shape[1:], kwargs=kwargs, since_version=info.since_version,
                variables=variables,
                module_args=tuple(None if isinstance(a, ValueRef) and a.name in variable else arg_value(a)
                                  for a in node.args),
            )
            layer = entry.load()(ctx)
            if not isinstance(layer, DualLayer) or isinstance(layer, ConstantDual):
                raise OnnxDualError(f"the dual layer factory for {node.info.op_type} from "
                                    f"{entry.distribution} returned {type(layer).__name__}, not an AffineDual "
                                    "or ActivationDual")
            if isinstance(layer, MultiInputActivation):
                steps.extend(_packed_steps(node, layer, var_args, values, out))
                continue
            if isinstance(layer, ActivationDual) and len(var_args) != 1:
                raise InvalidInputError(f"node {node.info.name!r}: an activation must have one variable input")
            if not isinstance(layer, (AffineDual, ActivationDual)):
                raise OnnxDualError(f"dual layer {type(layer).__name__} for {node.info.op_type} implements "
                                    "neither AffineDual nor ActivationDual")
            steps.append(DualStep(node, layer, tuple(a.name for a in var_args), out.shape[1:],
                                  tuple(values[a.name].shape[1:] for a in var_args)))
    if missing:
        raise UnsupportedOpsError(missing)
    if graph.output_name not in variable:
        raise InvalidInputError("the network output does not depend on its input")
    return BuiltDual(graph, tuple(steps), x.shape[1:])


def _packed_steps(node: GraphNode, layer: MultiInputActivation, var_args, values, out: Tensor,
                  ) -> tuple[DualStep, DualStep]:
    """A multi-input activation as two steps: its variable inputs packed into one vector (an exact affine
    step, :class:`~onnxdual.duals.multi.PackDual`), then the activation of that one input, so the engine's
    single-input machinery applies unchanged (see :mod:`onnxdual.duals.multi`)."""
    name = f"{node.name}:inputs"
    pack_node = replace(node, name=name, info=replace(node.info, name=f"{node.info.name}:inputs", op_type="Pack",
                                                      domain="onnxdual"))
    shapes = tuple(values[a.name].shape[1:] for a in var_args)
    pack = DualStep(pack_node, PackDual(layer.ctx, layer.packing), tuple(a.name for a in var_args),
                    torch.Size([layer.packing.size]), shapes)
    return pack, DualStep(node, layer, (name,), out.shape[1:], (torch.Size([layer.packing.size]),))
