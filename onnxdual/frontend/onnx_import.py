"""``onnxdual.load``: ONNX file or model -> torch module carrying its ONNX node information, composed from the
frontend's rooms (:mod:`~onnxdual.frontend.reader`, :mod:`~onnxdual.frontend.rewrites`,
:mod:`~onnxdual.frontend.opset`, :mod:`~onnxdual.frontend.convert`).

* Values that do not depend on the network input's values (exporters' shape arithmetic) are folded into
  initializers (:func:`onnxdual.frontend.folding.fold_constants`), and a model of an opset newer than
  onnx2torch converts is moved down to :data:`~onnxdual.frontend.opset.CONVERT_OPSET`
  (:func:`~onnxdual.frontend.opset.downgrade`; torch's exporters write opsets 18 to 21).
* Before converting, the whole graph is checked against the dual-layer registry and *every* operator
  without a dual layer is reported at once (:class:`~onnxdual.errors.UnsupportedOpsError`).
* Old operator versions onnx2torch has no converter for (Flatten-1, Dropout-7, Slice-1 appear in VNN-COMP
  files) are handled by upgrading the model (:func:`onnxdual.frontend.opset.upgrade`) and converting again.
"""

from __future__ import annotations

import os

import onnx
import torch
from torch import fx

from onnxdual import registry as registries
from onnxdual.errors import MissingOp, ModelLoadError, UnsupportedOpsError
from onnxdual.frontend.convert import OnnxNodeInfo, convert, node_infos
from onnxdual.frontend.folding import fold_constants
from onnxdual.frontend.opset import UPGRADE_OPSET, downgrade, opset_of, since_version, upgrade
from onnxdual.frontend.reader import copy_model, graph_inputs, read_model, read_model_bytes, variable_nodes
from onnxdual.frontend.lowering import split_to_slices
from onnxdual.frontend.rewrites import prepare_for_conversion

__all__ = ["OnnxNodeInfo", "load", "missing_duals", "read_model", "read_model_bytes", "graph_inputs",
           "variable_nodes", "opset_of"]


def missing_duals(model: onnx.ModelProto, registry: registries.Registry | None = None) -> list[MissingOp]:
    """Every variable node whose operator version has no dual layer in ``registry`` (default: the
    installed one), after constant folding (shape arithmetic needs none)."""
    table = registry if registry is not None else registries.default()
    model = fold_constants(model)
    missing = []
    for i, node in enumerate(variable_nodes(model)):
        opset = opset_of(model, node.domain)
        if table.lookup(node.op_type, node.domain, since_version(node.op_type, node.domain, opset)) is None:
            missing.append(MissingOp(node.op_type, node.domain, opset, node.name or f"#{i} ({node.op_type})"))
    return missing


def _check_finite_weights(module: fx.GraphModule, source: str) -> None:
    """A NaN or infinite weight makes every bound and attack meaningless (NaN compares false, so nothing
    would be flagged): refuse the model up front, naming the first such tensor."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            kind = "NaN" if bool(torch.isnan(tensor).any()) else "infinite"
            raise ModelLoadError(f"{source}: weight {name!r} holds {kind} values; a network with non-finite "
                                 "weights cannot be certified")


def load(path: str | os.PathLike | onnx.ModelProto,
         registry: registries.Registry | None = None) -> fx.GraphModule:
    """Load an ONNX network as a torch module whose output equals onnxruntime's (float32).

    Raises :class:`ModelLoadError` for unreadable files or non-finite weights and :class:`UnsupportedOpsError`
    listing every operator without a dual layer in ``registry`` (default: the installed one; a non-default
    registry is remembered as ``module.onnxdual_registry`` and used when the dual network is built). The
    returned module carries the ONNX node information the dual network needs (``module.onnxdual_nodes``)."""
    if isinstance(path, onnx.ModelProto):
        model = copy_model(path)  # the fixes below must not change the caller's model
    else:
        model = read_model(path)
    source = "<model>" if isinstance(path, onnx.ModelProto) else str(path)
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise ModelLoadError(f"{source}: the network must have exactly one input, it has {len(inputs)}")
    model = downgrade(split_to_slices(fold_constants(model)))  # Split-18 has no down adapter
    missing = missing_duals(model, registry)
    if missing:
        raise UnsupportedOpsError(missing)
    model = prepare_for_conversion(model)
    try:
        module = convert(model)
    except NotImplementedError as first:
        if opset_of(model, "") >= UPGRADE_OPSET:
            raise ModelLoadError(f"{source}: onnx2torch cannot convert it: {first}") from first
        try:
            model = upgrade(model)
            module = convert(model)
        except Exception as exc:
            raise ModelLoadError(f"{source}: cannot convert opset {opset_of(model, '')} model "
                                 f"({first}); upgrading to opset {UPGRADE_OPSET} failed too: {exc}") from exc
    except Exception as exc:
        raise ModelLoadError(f"{source}: onnx2torch cannot convert it: {type(exc).__name__}: {exc}") from exc
    _check_finite_weights(module, source)
    module.onnxdual_nodes = node_infos(model, module)
    module.onnxdual_input_name = inputs[0]
    if registry is not None:
        module.onnxdual_registry = registry
    module.eval()
    return module
