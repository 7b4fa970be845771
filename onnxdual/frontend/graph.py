"""The engine's view of a network: a topologically ordered DAG of operator nodes (paper eq. 1).

Built from the torch.fx module :func:`onnxdual.load` returns. Each node keeps the torch module
that computes it, its ONNX identity (operator type, domain, opset, attributes) and where each of its
arguments comes from: the network input, another node, or a constant.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Union

from torch import Tensor, fx, nn

from onnxdual.errors import InvalidInputError
from onnxdual.frontend.convert import OnnxNodeInfo


@dataclass(frozen=True)
class ValueRef:
    """An argument computed by the node (or the network input) with this name."""

    name: str


Arg = Union[ValueRef, Tensor, None, int, float]


@dataclass(frozen=True)
class GraphNode:
    name: str
    info: OnnxNodeInfo
    module: nn.Module
    args: tuple[Arg, ...]
    kwargs: dict[str, Arg]


@dataclass(frozen=True)
class Graph:
    input_name: str
    nodes: tuple[GraphNode, ...]
    output_name: str

    def consumers(self) -> dict[str, int]:
        """How many node arguments read each value (to free forward state early)."""
        counts: dict[str, int] = {}
        for node in self.nodes:
            for arg in (*node.args, *node.kwargs.values()):
                if isinstance(arg, ValueRef):
                    counts[arg.name] = counts.get(arg.name, 0) + 1
        return counts


def _fetch_attr(module: fx.GraphModule, target: str) -> Tensor:
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def build_graph(module: nn.Module) -> Graph:
    """Read the DAG of a module returned by :func:`onnxdual.load`."""
    infos = getattr(module, "onnxdual_nodes", None)
    if not isinstance(module, fx.GraphModule) or infos is None:
        raise InvalidInputError("the network must be loaded with onnxdual.load(path) (an ONNX model "
                                "converted by onnx2torch); export a torch model to ONNX first")
    aliases: dict[str, str] = {}
    nodes: list[GraphNode] = []
    input_name = output_name = None

    def resolve(arg) -> Arg:
        if isinstance(arg, fx.Node):
            if arg.op == "get_attr":
                return _fetch_attr(module, arg.target)
            return ValueRef(aliases.get(arg.name, arg.name))
        if isinstance(arg, (list, tuple)):
            raise InvalidInputError("operators taking lists of tensors are not supported")
        return arg

    for node in module.graph.nodes:
        if node.op == "placeholder":
            if input_name is not None:
                raise InvalidInputError("the network must have exactly one input")
            input_name = node.name
        elif node.op == "get_attr":
            continue
        elif node.op == "call_function" and node.target is operator.getitem:
            source, index = node.args
            if index != 0:
                raise InvalidInputError(f"node {source.name!r}: only the first output of a multi-output "
                                        "operator may be used")
            aliases[node.name] = aliases.get(source.name, source.name)
        elif node.op == "call_module":
            info = infos.get(node.target)
            if info is None:
                raise InvalidInputError(f"module {node.target!r} has no ONNX node information")
            nodes.append(GraphNode(node.name, info, module.get_submodule(node.target),
                                   tuple(resolve(a) for a in node.args),
                                   {k: resolve(v) for k, v in node.kwargs.items()}))
        elif node.op == "output":
            out = node.args[0]
            if isinstance(out, (tuple, list)):
                if len(out) != 1:
                    raise InvalidInputError("the network must have exactly one output")
                out = out[0]
            output_name = aliases.get(out.name, out.name)
        else:
            raise InvalidInputError(f"unexpected graph node {node.op} {node.target}")
    if input_name is None or output_name is None:
        raise InvalidInputError("the network has no input or no output")
    return Graph(input_name, tuple(nodes), output_name)
