"""ONNX out of torch: a module exported to an ONNX file (checked in onnxruntime), a plain torch module as
the network the engine bounds (:func:`as_network`: exported, checked and loaded back), and the parameters a
training run learned written back into the initializers of the ONNX graph it trained.

Training always works on the module :func:`onnxdual.load` builds from an ONNX graph (the dual network is
built from that graph), so the trained model is that same graph with new initializer values: the exported
file has exactly the structure that was trained and certified. Both directions are checked against the torch
module in onnxruntime (:class:`~onnxdual.frontend.reference.ReferenceSession`) before a file is written.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor, fx, nn

from onnxdual.errors import InvalidInputError, ModelLoadError
from onnxdual.files import atomic_write
from onnxdual.frontend.onnx_import import load
from onnxdual.frontend.opset import CONVERT_OPSET
from onnxdual.frontend.reader import copy_model, parse_model
from onnxdual.frontend.reference import ReferenceSession

#: an ONNX model, for the annotations of modules that must not import ONNX themselves
ModelProto = onnx.ModelProto


def export_onnx(model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike[str],
                opset: int = CONVERT_OPSET, check: bool = True) -> Path:
    """Write ``model`` as a float32 ONNX file with a free batch dimension (input ``input``, output
    ``logits``), with the legacy TorchScript exporter (``dynamo=False``), by default at the opset onnx2torch
    converts back (:data:`onnxdual.frontend.opset.CONVERT_OPSET`).

    The file appears atomically (:func:`onnxdual.files.atomic_write`), so a reader never sees a partial
    file. ``model`` itself is left untouched (a float32 CPU copy in eval mode is exported). With ``check``,
    the exported graph is run with onnxruntime on a random batch and compared with the module before the
    file is written; a mismatch raises :class:`ModelLoadError`. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, export_onnx_bytes(model, input_shape, opset, check))
    return path


def export_onnx_bytes(model: nn.Module, input_shape: Sequence[int], opset: int = CONVERT_OPSET,
                      check: bool = True, keep_names: bool = False) -> bytes:
    """The serialised ONNX graph :func:`export_onnx` writes (same export, same onnxruntime check), for a
    caller that parses it in memory instead of writing a file and reading it back. ``keep_names``: no
    eval-mode fusion (a BatchNormalization stays a node of its own), so every parameter the exporter
    writes as it is keeps its name, prefixed ``wrapped.``, as an initializer (what :func:`as_network`
    ties back to the module)."""
    shape = tuple(int(s) for s in input_shape)
    net = copy.deepcopy(model).float().cpu().eval()
    mode, exported_module = torch.onnx.TrainingMode.EVAL, net
    if keep_names:
        # PRESERVE exports the eval-mode layers as they are, without the Conv+BatchNorm fusion of EVAL; a
        # wrapper flagged as training keeps the exporter from merging initializers of equal value (a fresh
        # BatchNorm's weight and running variance are both ones), which it does only for eval models
        mode, exported_module = torch.onnx.TrainingMode.PRESERVE, _Wrapper(net)
    with tempfile.TemporaryDirectory(prefix="onnxdual-export-") as tmp:
        exported = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(exported_module, (torch.zeros(1, *shape),), str(exported), dynamo=False,
                              opset_version=opset, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, training=mode)
        data = exported.read_bytes()
    if check:
        _check_export(net, shape, data)
    return data


class _Wrapper(nn.Module):
    """``module`` under the name :data:`WRAPPED` (its tensors' initializers are ``WRAPPED + "." + name``)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.wrapped = module
        self.training = True  # this flag only: the wrapped layers stay in eval mode

    def forward(self, x: Tensor) -> Tensor:
        return self.wrapped(x)


#: the prefix of the initializer names :func:`export_onnx_bytes` writes with ``keep_names``
WRAPPED = "wrapped"


def _check_export(net: nn.Module, shape: tuple[int, ...], model: bytes) -> None:
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))  # leaves the global RNG alone
    with torch.no_grad():
        want = net(x).numpy()
    try:
        got = ReferenceSession(model, "the exported ONNX graph").evaluate(x.numpy())
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"the exported ONNX graph does not run in onnxruntime: {exc}") from exc
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    tol = 1e-4 * max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    if got.shape != want.shape or not math.isfinite(diff) or diff > tol:
        raise ModelLoadError(f"the exported ONNX graph disagrees with the torch module (output {got.shape} "
                             f"vs {want.shape}, max abs difference {diff:.3g} > {tol:.3g})")


@dataclass(frozen=True)
class Binding:
    """One trained tensor of the fx module and the ONNX initializer it is written back to."""

    tensor: str
    initializer: str
    to_onnx: Callable[[Tensor], Tensor]


def parameter_bindings(model: onnx.ModelProto, net: fx.GraphModule, strict: bool = True) -> list[Binding]:
    """Map every trainable tensor of ``net`` (from :func:`onnxdual.load` of ``model``) to its initializer.

    onnx2torch names each module after its ONNX node (``OnnxGraph`` unique names) and builds ``nn.Conv*``
    from Conv (weight = input 1, bias = input 2), ``nn.Linear`` from Gemm with constant operands (weight
    ``alpha * B``, transposed when ``transB = 0``; bias ``beta * C``) and ``nn.BatchNorm*`` from
    BatchNormalization (scale, bias, mean, var = inputs 1..4). Constants that onnx2torch keeps as buffers
    (MatMul/Add operands, ...) are not trained. Raises :class:`InvalidInputError` for a trainable tensor
    that cannot be written back, or an initializer shared by several nodes (training would untie it);
    with ``strict=False`` such tensors are left out instead (:func:`as_network` ties what it can).
    """
    from onnx2torch.onnx_graph import OnnxGraph

    modules = dict(net.named_modules())
    initializers = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    bindings: list[Binding] = []

    def bind(module_name: str, attr: str, node: onnx.NodeProto, position: int,
             to_onnx: Callable[[Tensor], Tensor] = lambda t: t) -> None:
        try:
            _bind(module_name, attr, node, position, to_onnx)
        except InvalidInputError:
            if strict:
                raise

    def _bind(module_name: str, attr: str, node: onnx.NodeProto, position: int,
              to_onnx: Callable[[Tensor], Tensor]) -> None:
        if position >= len(node.input) or node.input[position] not in initializers:
            raise InvalidInputError(f"cannot train node {node.name or node.op_type!r}: its input {position} "
                                    "is not an initializer, so the trained value has nowhere to go")
        name = node.input[position]
        if uses.get(name, 0) > 1:
            raise InvalidInputError(f"initializer {name!r} is shared by several nodes; "
                                    "training would untie it")
        expected = tuple(initializers[name].dims)
        got = tuple(to_onnx(getattr(modules[module_name], attr).detach()).shape)
        if got != expected:
            raise InvalidInputError(f"node {node.name or node.op_type!r}: trained {attr} has shape {got} but "
                                    f"initializer {name!r} has shape {expected}")
        bindings.append(Binding(f"{module_name}.{attr}" if module_name else attr, name, to_onnx))

    for unique_name, onnx_node in OnnxGraph(model.graph).nodes.items():
        module = modules.get(unique_name)
        if module is None or not list(module.parameters(recurse=False)):
            continue
        node = onnx_node.proto
        if isinstance(module, nn.Linear) and node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
            trans_b = int(attrs.get("transB", 0)) != 0

            def weight(t: Tensor, alpha: float = alpha, trans_b: bool = trans_b) -> Tensor:
                w = t / alpha if alpha != 1.0 else t
                return w if trans_b else w.T

            bind(unique_name, "weight", node, 1, weight)
            if module.bias is not None:
                bind(unique_name, "bias", node, 2, lambda t, beta=beta: t / beta if beta != 1.0 else t)
        elif isinstance(module, nn.modules.conv._ConvNd) and node.op_type in ("Conv", "ConvTranspose"):
            bind(unique_name, "weight", node, 1)
            if module.bias is not None:
                bind(unique_name, "bias", node, 2)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and node.op_type == "BatchNormalization":
            for position, attr in enumerate(("weight", "bias", "running_mean", "running_var"), 1):
                if getattr(module, attr, None) is not None:
                    bind(unique_name, attr, node, position)
        elif strict:
            raise InvalidInputError(f"cannot train node {node.name or node.op_type!r} ({node.op_type}): "
                                    "onnxdual does not know where its trained parameters go in the graph")
    if not strict:
        return bindings
    bound = {b.tensor for b in bindings}
    loose = [name for name, _ in net.named_parameters() if name not in bound]
    if loose:
        raise InvalidInputError(f"cannot map trained parameter(s) {', '.join(loose[:3])} "
                                "back to the ONNX graph")
    if not any(True for _ in net.parameters()):
        raise InvalidInputError("the model has no trainable parameters (weights of Conv, Gemm or "
                                "BatchNormalization nodes)")
    return bindings


def trained_model(template: onnx.ModelProto, net: nn.Module, bindings: Sequence[Binding]) -> onnx.ModelProto:
    """A copy of ``template`` whose initializers hold ``net``'s current parameters."""
    model = copy_model(template)
    state = net.state_dict()
    index = {t.name: i for i, t in enumerate(model.graph.initializer)}
    for b in bindings:
        old = model.graph.initializer[index[b.initializer]]
        value = b.to_onnx(state[b.tensor].detach().to("cpu")).contiguous().numpy()
        value = value.astype(onnx.helper.tensor_dtype_to_np_dtype(old.data_type), copy=False)
        model.graph.initializer[index[b.initializer]].CopyFrom(numpy_helper.from_array(value, b.initializer))
    return model


def check_onnx_parity(model: onnx.ModelProto, net: nn.Module, x: Tensor, tol: float = 1e-4) -> float:
    """Run ``model`` in onnxruntime and ``net`` in torch on ``x``; raise if they differ. Returns the largest
    absolute difference."""
    xs = x.detach().to("cpu", torch.float32)
    got = ReferenceSession(model.SerializeToString(), "the trained model").evaluate(xs.numpy())
    with torch.no_grad():
        param = next(net.parameters())
        expected = net(xs.to(param.device)).to("cpu").numpy()
    diff = float(np.abs(got.reshape(expected.shape) - expected).max())
    scale = max(1.0, float(np.abs(expected).max()))
    if not diff <= tol * scale:
        raise RuntimeError(f"exported ONNX model differs from the trained network by {diff:.3g} (bug)")
    return diff


def is_loaded(net: object) -> bool:
    """Whether ``net`` is a network from :func:`onnxdual.load` (an fx module with ONNX node information)."""
    return isinstance(net, fx.GraphModule) and getattr(net, "onnxdual_nodes", None) is not None


@dataclass
class _Converted:
    """A torch module's loaded network, and what it was made from (to tell when it is out of date)."""

    network: fx.GraphModule
    tensors: dict[str, int]  # every parameter and buffer of the module: name -> id of the tensor object
    snapshot: dict[str, Tensor]  # the values of the ones the network holds copies of


#: module -> {(input shape, device): its loaded network}; an entry goes when the module does
_CONVERTED: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, _Converted]]" = weakref.WeakKeyDictionary()


def _module_tensors(module: nn.Module) -> dict[str, Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def _current(entry: _Converted, module: nn.Module) -> bool:
    tensors = _module_tensors(module)
    if {name: id(t) for name, t in tensors.items()} != entry.tensors:
        return False  # a submodule or tensor was replaced: the structure may differ
    return all(torch.equal(tensors[name].detach(), value) for name, value in entry.snapshot.items())


def _tie(model: onnx.ModelProto, net: fx.GraphModule, module: nn.Module) -> set[str]:
    """Make ``net`` hold ``module``'s own parameters and buffers wherever the export kept one as the
    initializer of the same name that ``net`` uses unchanged (Conv, Gemm, BatchNormalization): gradients
    then reach the module, and training it in place moves the network with it. Returns the tied names."""
    own = _module_tensors(module)
    tied: set[str] = set()
    for b in parameter_bindings(model, net, strict=False):
        name = b.initializer.removeprefix(WRAPPED + ".")
        source = own.get(name) if name != b.initializer else None
        owner_name, _, attr = b.tensor.rpartition(".")
        owner = net.get_submodule(owner_name)
        current = getattr(owner, attr)
        probe = torch.rand(current.shape, generator=torch.Generator().manual_seed(0)).to(current)
        if (source is None or source.shape != current.shape or source.dtype != current.dtype
                or source.device != current.device or isinstance(source, nn.Parameter)
                != isinstance(current, nn.Parameter) or not torch.equal(source.detach(), current.detach())
                or not torch.equal(b.to_onnx(probe), probe)):  # the initializer is the tensor, untransformed
            continue
        if isinstance(source, nn.Parameter):
            setattr(owner, attr, source)
        else:
            owner.register_buffer(attr, source)
        tied.add(name)
    return tied


def as_network(net: nn.Module, example: Tensor) -> fx.GraphModule:
    """The network the engine bounds: ``net`` itself when it comes from :func:`onnxdual.load`; a plain torch
    module is exported to ONNX for inputs shaped like ``example`` (``(B, *shape)``), checked against the
    module in onnxruntime (:func:`export_onnx_bytes`) and loaded back, on ``example``'s device.

    The module is bounded as in eval mode (BatchNorm with its running statistics, no dropout). It is not
    changed: the export works on a copy. The loaded network holds the module's own parameters and
    buffers wherever the export keeps them as they are (Conv, Linear, BatchNorm weights), so gradients of
    a bound reach the module; ``network.onnxdual_untied`` names the module's parameters it holds copies
    of instead (folded or fused by the exporter). The loaded network is kept for the module (per input
    shape and device) and made again when the module's tensors were replaced or a copied one changed value.
    """
    if is_loaded(net):
        return net
    if not isinstance(net, nn.Module):
        raise InvalidInputError(f"the network must be a torch module (nn.Module) or a network from "
                                f"onnxdual.load, not {type(net).__name__}")
    if not isinstance(example, Tensor) or example.dim() < 2:
        raise InvalidInputError("a torch module needs an example input of shape (batch, *input_shape)")
    devices = {t.device for t in _module_tensors(net).values()}
    if devices and devices != {example.device}:
        raise InvalidInputError(f"the module's tensors are on {', '.join(sorted(map(str, devices)))} but the "
                                f"inputs on {example.device}: move them to one device")
    key = (tuple(example.shape[1:]), example.device)
    entries = _CONVERTED.setdefault(net, {})
    entry = entries.get(key)
    if entry is None or not _current(entry, net):
        model = parse_model(export_onnx_bytes(net, key[0], keep_names=True), "the exported ONNX graph")
        with torch.random.fork_rng(devices=[]):  # onnx2torch's fresh layers draw initial weights
            network = load(model).to(example.device)
        tied = _tie(model, network, net)
        tensors = _module_tensors(net)
        network.onnxdual_untied = tuple(name for name, _ in net.named_parameters() if name not in tied)
        # BatchNorm's counter changes with every training step and plays no part in eval mode
        entry = _Converted(network, {name: id(t) for name, t in tensors.items()},
                           {name: t.detach().clone() for name, t in tensors.items()
                            if name not in tied and name.rpartition(".")[2] != "num_batches_tracked"})
        entries[key] = entry
    return entry.network


__all__ = ["ModelProto", "export_onnx", "export_onnx_bytes", "Binding", "parameter_bindings", "trained_model",
           "check_onnx_parity", "as_network", "is_loaded"]
