"""The one place onnx2torch is called: ONNX model -> torch.fx module, and, per ONNX node, what the dual
layers may know about it (:class:`OnnxNodeInfo`: operator, opset and schema version, decoded attributes,
input and output names, and where each constant input's value lives).

A constant input (an initializer or a ``Constant`` node's output) that onnx2torch keeps as a tensor of the
converted module -- ``nn.Conv2d.weight`` for a Conv weight, a buffer read by the node for a MatMul operand --
is recorded by the *name of that tensor*, found by comparing values (also transposed, and scaled by Gemm's
``alpha``/``beta``, the layouts onnx2torch uses). The dual layer then reads the live tensor, so training
reaches it and a trained network is bounded with its trained weights. Nothing else in onnxdual looks inside
onnx2torch's modules: a new onnx2torch release that stores tensors differently is caught here (the value is
then the ONNX constant, which bounds the loaded network exactly).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import Tensor, fx, nn

from onnxdual.frontend.opset import opset_of, since_version
from onnxdual.frontend.torchvision_compat import import_onnx2torch


@dataclass(frozen=True)
class ConstantInput:
    """Where the value of one constant node input lives: a tensor of the converted module (``tensor``, its
    qualified name, read as ``t.T`` when ``transposed`` and divided by ``scale``), else ``value``."""

    tensor: str | None = None
    transposed: bool = False
    scale: float = 1.0
    value: np.ndarray | None = None

    def resolve(self, net: nn.Module) -> Tensor:
        """The value as a torch tensor in ONNX layout (the module's live tensor where there is one)."""
        if self.tensor is None:
            return torch.from_numpy(np.array(self.value))
        t: Any = net
        for part in self.tensor.split("."):
            t = getattr(t, part)
        if self.transposed:
            t = t.T
        return t if self.scale == 1.0 else t / self.scale


@dataclass(frozen=True)
class OnnxNodeInfo:
    """What the dual-layer factories learn about the ONNX node behind an fx module."""

    name: str
    op_type: str
    domain: str
    opset: int
    attributes: dict[str, Any] = field(default_factory=dict)
    since_version: int | None = None  # the operator version the ONNX schema resolves (None: no schema)
    inputs: tuple[str, ...] = ()  # ONNX input names ("" for an omitted optional input)
    outputs: tuple[str, ...] = ()
    constants: dict[int, ConstantInput] = field(default_factory=dict)  # by input position


def versions() -> dict[str, str]:
    """Versions of the ONNX packages onnxdual reads and converts with."""
    from importlib import metadata

    # onnx2torch has no ``__version__``: its distribution's metadata knows the version
    return {"onnx": onnx.__version__, "onnx2torch": metadata.version("onnx2torch")}


class _Gelu(nn.Module):
    """Gelu-20 as ONNX defines it (``approximate``: ``"none"``, the erf form, or ``"tanh"``)."""

    def __init__(self, approximate: str):
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.gelu(x, approximate=self.approximate)


def _add_missing_converters() -> None:
    """Converters onnx2torch lacks, added through its public registry once: Gelu-20 (the dual layer reads
    the ONNX node; the module only computes it)."""
    from onnx2torch.node_converters.registry import add_converter, get_converter
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    try:
        get_converter("Gelu", 20)
    except NotImplementedError:
        @add_converter(operation_type="Gelu", version=20)
        def _gelu(node, graph):  # noqa: ARG001 - onnx2torch's converter signature
            approximate = node.attributes.get("approximate", "none")
            approximate = approximate.decode() if isinstance(approximate, bytes) else str(approximate)
            return OperationConverterResult(torch_module=_Gelu(approximate),
                                            onnx_mapping=onnx_mapping_from_node(node))


def convert(model: onnx.ModelProto) -> fx.GraphModule:
    """onnx2torch's conversion (its exceptions pass through: ``NotImplementedError`` for a missing
    converter)."""
    onnx2torch = import_onnx2torch()
    _add_missing_converters()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return onnx2torch.convert(model)


def _scales(proto: onnx.NodeProto, attributes: dict[str, Any], position: int) -> list[float]:
    """Factors onnx2torch may have multiplied a constant input by (Gemm folds alpha into B, beta into C)."""
    if proto.op_type == "Gemm" and proto.domain in ("", "ai.onnx") and position in (1, 2):
        factor = float(attributes.get("alpha" if position == 1 else "beta", 1.0))
        return [1.0] if factor == 1.0 else [1.0, factor]
    return [1.0]


def _locate(array: np.ndarray, candidates: list[tuple[str, Tensor]], used: set[str],
            scales: list[float]) -> ConstantInput | None:
    """The first unused candidate tensor equal to ``array`` (as is or transposed, times a scale)."""
    value = torch.from_numpy(np.array(array))
    for scale in scales:
        for transposed in (False, True):
            if transposed and value.dim() != 2:
                continue
            want = value.T if transposed else value
            want = want if scale == 1.0 else want * scale
            for name, t in candidates:
                if (name not in used and t.dtype == want.dtype and t.shape == want.shape
                        and torch.equal(t.detach().cpu(), want)):
                    used.add(name)
                    return ConstantInput(name, transposed, scale)
    return None


def node_infos(model: onnx.ModelProto, module: fx.GraphModule) -> dict[str, OnnxNodeInfo]:
    """Map onnx2torch's unique module names back to the ONNX nodes (same naming rule, same order)."""
    import_onnx2torch()
    from onnx2torch.onnx_graph import OnnxGraph

    initializers = {t.name: t for t in model.graph.initializer}
    constant_nodes = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant" and n.output}
    fx_tensors: dict[str, list[str]] = {}  # module name -> tensors its fx node reads through get_attr
    for fx_node in module.graph.nodes:
        if fx_node.op == "call_module":
            fx_tensors[fx_node.target] = [a.target for a in (*fx_node.args, *fx_node.kwargs.values())
                                          if isinstance(a, fx.Node) and a.op == "get_attr"]
    infos = {}
    for unique_name, node in OnnxGraph(model.graph).nodes.items():
        proto = node.proto
        attributes = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        opset = opset_of(model, proto.domain)
        constants: dict[int, ConstantInput] = {}
        candidates: list[tuple[str, Tensor]] | None = None
        used: set[str] = set()
        for position, name in enumerate(proto.input):
            if name in initializers:
                array = numpy_helper.to_array(initializers[name])
            elif name in constant_nodes and proto.op_type != "Constant":
                array = _constant_value(constant_nodes[name])
                if array is None:
                    continue
            else:
                continue
            if candidates is None:
                candidates = _candidates(module, unique_name, fx_tensors.get(unique_name, []))
            found = _locate(array, candidates, used, _scales(proto, attributes, position))
            constants[position] = found or ConstantInput(value=array)
        infos[unique_name] = OnnxNodeInfo(proto.name or unique_name, proto.op_type, proto.domain, opset,
                                          attributes, since_version(proto.op_type, proto.domain, opset),
                                          tuple(proto.input), tuple(proto.output), constants)
    return infos


def _candidates(module: fx.GraphModule, unique_name: str, fx_tensors: list[str]) -> list[tuple[str, Tensor]]:
    """The tensors a node's module owns (in declaration order), then those its fx node reads."""
    out: list[tuple[str, Tensor]] = []
    try:
        own = module.get_submodule(unique_name)
    except AttributeError:
        own = None
    if own is not None:
        prefix = f"{unique_name}."
        out += [(prefix + n, t) for n, t in own.named_parameters()]
        out += [(prefix + n, t) for n, t in own.named_buffers()]
    for target in fx_tensors:
        obj: Any = module
        for part in target.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, Tensor):
            out.append((target, obj))
    return out


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a ``Constant`` node (None for attribute kinds without a tensor value)."""
    if len(node.attribute) != 1:
        return None
    attr = node.attribute[0]
    value = helper.get_attribute_value(attr)
    if attr.name == "value":
        return numpy_helper.to_array(value)
    if attr.name in ("value_float", "value_floats"):
        return np.asarray(value, dtype=np.float32)
    if attr.name in ("value_int", "value_ints"):
        return np.asarray(value, dtype=np.int64)
    return None
