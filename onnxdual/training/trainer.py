"""Robust training of an ONNX network through its dual network (Wong et al. 2018, §3 and App. G).

Every step minimises the robust cross entropy ``CE(-J(x, g(e_y - e_j)), y)`` of a batch, where ``J`` is the
dual objective of Theorem 1, computed with ``r`` random projections (Alg. 1, §3.2; ``proj=None`` trains on
the exact bound). As in App. G the radius is ramped linearly, step by step, from ``eps_start`` to ``eps``
over the first ``ramp_epochs`` epochs, after which the learning rate is halved every ``lr_decay_every``
epochs (App. G: 0.5 every 10 epochs of a 60-epoch run).

The dual network is built from the ONNX graph of the network, so training always works on a module from
:func:`onnxdual.load`. A built-in architecture or a torch module is exported to ONNX first; the trained
parameters are written back into that ONNX graph's initializers (``model.onnx``), so the exported file has
exactly the structure that was trained and certified, and it is checked against the trained module in
onnxruntime before it is written.

Files in ``out_dir`` (written by rank 0 only, each atomically: a temporary file then :func:`os.replace`):

* ``checkpoint.pt`` after every epoch: parameters, optimiser state, epoch and step, every RNG state (torch,
  numpy, python, the data-order and projection generators, per rank), the configuration and the metrics so
  far. ``resume=True`` continues from it and ends with the same weights as an uninterrupted run.
* ``metrics.csv``: one row per finished epoch (rewritten whole from the checkpoint's history each epoch, so
  a killed run never leaves a torn or duplicated row).
* ``model.onnx`` at the end (and ``epoch_XX.onnx`` after every epoch with ``export_epochs=True``).

Distributed data parallel training: when a :mod:`torch.distributed` process group is initialised (see
:func:`init_distributed`, which joins the group ``torchrun`` describes), every rank takes a disjoint,
contiguous shard of each global batch, computes the summed robust loss of its shard divided by the global
batch size, and the gradients are summed over ranks before the optimiser step -- exactly the gradient of
the global batch's mean loss. The dual network uses the network's parameters outside ``forward``, which
``DistributedDataParallel``'s hooks would not see, hence the explicit all-reduce. All ranks start from
rank 0's weights (broadcast) and draw the same random projections (one matrix per step is shared by the
whole batch, see ``onnxdual.engine.autodual._cauchy``), so a run on N processes equals a single-process run
on the same global batches up to floating-point rounding.

The network is kept in inference mode throughout: batch normalisation has fixed statistics in its dual
layer (App. B.5), so the forward pass, the bound and the exported ONNX all use the same affine map.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import onnx
import torch
import torch.distributed as dist
from onnx import numpy_helper
from torch import Tensor, fx, nn

from onnxdual.engine.network import robust_loss
from onnxdual.errors import InvalidInputError
from onnxdual.frontend.onnx_import import load, read_model

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from onnxdual.certify import CertifyResult

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
MODEL = "model.onnx"
CHECKPOINT_FORMAT = "onnxdual-train-checkpoint"
METRIC_COLUMNS = ("epoch", "robust_loss", "robust_err_estimate", "clean_err", "eps", "lr", "seconds")

#: default learning rate of each optimiser: Adam 1e-3 (App. G.1, MNIST), SGD 0.05 (App. G.2, CIFAR-10)
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.05}

#: configuration fields a resumed run may change (they do not alter the optimisation trajectory)
RESUMABLE_CHANGES = frozenset({"epochs", "device", "export_epochs"})


class SoundnessError(RuntimeError):
    """A certified bound was beaten by an attack: a bug in the bounds, never a user error."""


# ---------------------------------------------------------------------------------------------------------
# configuration and schedules
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """Settings of one robust training run (defaults: App. G.1, MNIST).

    Attributes:
        eps: the final perturbation radius.
        norm: ``"linf"`` or ``"l2"`` (App. H).
        proj: number ``r`` of random projections for the bound estimate (Alg. 1); ``None`` trains on the
            exact bound. The paper uses 50 except where noted (§4).
        epochs: total number of epochs.
        batch_size: global batch size (split across ranks in distributed runs).
        optimizer: ``"adam"`` (App. G.1) or ``"sgd"`` with ``momentum`` (App. G.2).
        lr: learning rate; ``None`` means :data:`DEFAULT_LR` of the optimiser.
        eps_start: radius of the first step; ``None`` means 0.01 for MNIST-like and 0.001 for CIFAR-like
            (3-channel) data (App. G.1/G.2); never above ``eps``.
        ramp_epochs: epochs over which eps grows linearly, per step, from ``eps_start`` to ``eps``.
        lr_decay, lr_decay_every: after the ramp, the learning rate is multiplied by ``lr_decay`` every
            ``lr_decay_every`` epochs (App. G).
        seed: seeds the initialisation, the data order and the random projections.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        clip: data domain intersected with l-inf balls (pixels in ``(0, 1)``); ignored for ``l2``.
        reinit: re-initialise the parameters of a given ONNX model instead of fine-tuning them.
        normalize: ``(mean, std)`` per channel built into a built-in architecture (``None``: no layer).
        export_epochs: also write ``epoch_XX.onnx`` after every epoch.
    """

    eps: float
    norm: str = "linf"
    proj: int | None = 50
    epochs: int = 60
    batch_size: int = 50
    optimizer: str = "adam"
    lr: float | None = None
    momentum: float = 0.9
    eps_start: float | None = None
    ramp_epochs: int = 20
    lr_decay: float = 0.5
    lr_decay_every: int = 10
    seed: int = 0
    device: str = "cpu"
    clip: tuple[float, float] | None = (0.0, 1.0)
    reinit: bool = False
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    export_epochs: bool = False

    def __post_init__(self) -> None:
        if not _positive(self.eps):
            raise InvalidInputError(f"eps must be a positive finite number, got {self.eps!r}")
        if self.norm not in ("linf", "l2"):
            raise InvalidInputError(f"norm must be 'linf' or 'l2', got {self.norm!r}")
        if self.proj is not None and (isinstance(self.proj, bool) or not isinstance(self.proj, int)
                                      or self.proj < 1):
            raise InvalidInputError(f"proj must be a positive number of projections or None (exact), "
                                    f"got {self.proj!r}")
        for name in ("epochs", "batch_size", "lr_decay_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}")
        ramp = self.ramp_epochs
        if isinstance(ramp, bool) or not isinstance(ramp, int) or ramp < 0:
            raise InvalidInputError(f"ramp epochs must be a non-negative integer, got {self.ramp_epochs!r}")
        if self.optimizer not in DEFAULT_LR:
            raise InvalidInputError(f"optimizer must be one of {', '.join(DEFAULT_LR)}, "
                                    f"got {self.optimizer!r}")
        if self.lr is not None and not _positive(self.lr):
            raise InvalidInputError(f"learning rate must be a positive number, got {self.lr!r}")
        if self.eps_start is not None and not _positive(self.eps_start):
            raise InvalidInputError(f"eps start must be a positive number, got {self.eps_start!r}")
        if not (0 < self.lr_decay <= 1):
            raise InvalidInputError(f"lr decay must lie in (0, 1], got {self.lr_decay!r}")
        if not (0 <= self.momentum < 1):
            raise InvalidInputError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if self.clip is not None:
            lo, hi = self.clip
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise InvalidInputError(f"clip must be a range lo <= hi, got {self.clip!r}")
            object.__setattr__(self, "clip", (float(lo), float(hi)))
        if self.normalize is not None:
            mean, std = self.normalize
            if len(mean) != len(std) or any(not _positive(s) for s in std):
                raise InvalidInputError("normalize needs one mean and one positive std per channel")
            object.__setattr__(self, "normalize", (tuple(map(float, mean)), tuple(map(float, std))))

    @property
    def learning_rate(self) -> float:
        """The initial learning rate (``lr`` or the optimiser's default)."""
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def effective_clip(self) -> tuple[float, float] | None:
        """The data domain passed to the dual network (only l-inf balls are intersected with it)."""
        return self.clip if self.norm == "linf" else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (tuples become lists)."""
        d = asdict(self)
        d["clip"] = list(self.clip) if self.clip is not None else None
        d["normalize"] = ({"mean": list(self.normalize[0]), "std": list(self.normalize[1])}
                          if self.normalize is not None else None)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if kwargs.get("clip") is not None:
            kwargs["clip"] = tuple(kwargs["clip"])
        if kwargs.get("normalize") is not None:
            kwargs["normalize"] = (tuple(kwargs["normalize"]["mean"]), tuple(kwargs["normalize"]["std"]))
        return cls(**kwargs)


def _positive(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and value > 0)


def default_eps_start(input_shape: Sequence[int], dataset_name: str = "") -> float:
    """0.01 for MNIST-like data (App. G.1), 0.001 for CIFAR-like 3-channel data (App. G.2)."""
    cifar_like = "cifar" in dataset_name.lower() or (len(input_shape) == 3 and input_shape[0] == 3)
    return 0.001 if cifar_like else 0.01


def resolve_eps_start(config: TrainConfig, input_shape: Sequence[int], dataset_name: str = "") -> float:
    """The radius of the first step: ``config.eps_start`` or the default, never above ``config.eps``."""
    start = config.eps_start if config.eps_start is not None else default_eps_start(input_shape, dataset_name)
    return min(float(start), float(config.eps))


def eps_at(config: TrainConfig, step: int, steps_per_epoch: int, eps_start: float) -> float:
    """The radius at global step ``step`` (0-based): linear in the step from ``eps_start`` at step 0 to
    ``eps`` at step ``ramp_epochs * steps_per_epoch``, constant afterwards (App. G)."""
    ramp_steps = config.ramp_epochs * steps_per_epoch
    if ramp_steps <= 0 or step >= ramp_steps:
        return float(config.eps)
    return eps_start + (config.eps - eps_start) * (step / ramp_steps)


def lr_at(config: TrainConfig, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (0-based): constant during the ramp and the first
    ``lr_decay_every`` epochs after it, then multiplied by ``lr_decay`` every ``lr_decay_every`` epochs
    (App. G: "after which we decay the learning rate by a factor of 0.5 every 10 epochs")."""
    decays = max(0, (epoch - config.ramp_epochs) // config.lr_decay_every)
    return config.learning_rate * config.lr_decay ** decays


# ---------------------------------------------------------------------------------------------------------
# data, callbacks, results
# ---------------------------------------------------------------------------------------------------------
class TrainData(Protocol):
    """What training needs of a data set (``onnxdual.data.Dataset`` has it)."""

    x: Tensor
    y: Tensor
    name: str
    num_classes: int


@dataclass(frozen=True)
class ArrayData:
    """A plain in-memory data set (e.g. the subset a cascade stage trains on)."""

    x: Tensor
    y: Tensor
    name: str
    num_classes: int


class TrainCallback:
    """Progress hooks; override what you need. Called on every rank (a CLI shows progress on rank 0)."""

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        """Epoch ``epoch`` (1-based) of ``epochs`` begins; it has ``steps`` optimiser steps."""

    def on_step(self, i: int, n: int, metrics: Mapping[str, float]) -> None:
        """Step ``i`` (1-based) of ``n`` in the epoch is done; ``metrics`` of this rank's shard."""

    def on_epoch(self, metrics: Mapping[str, float]) -> None:
        """An epoch is done and checkpointed; ``metrics`` is its ``metrics.csv`` row (all ranks)."""


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    out_dir: Path
    model_path: Path
    history: list[dict[str, float]]
    net: fx.GraphModule
    config: TrainConfig
    trainable: list[str]
    resumed_from_epoch: int | None = None
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------------------
# distributed
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank and world size of the initialised process group, if any."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    return DistInfo()


def torchrun_world_size() -> int:
    """``WORLD_SIZE`` set by ``torchrun`` (1 outside it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_distributed(device: str = "auto") -> torch.device:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``): NCCL when training on CUDA, gloo on CPU. Returns this rank's device.
    """
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise InvalidInputError(f"distributed training needs {var} in the environment "
                                    "(start with torchrun)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dev


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when available; an unavailable CUDA device is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise InvalidInputError(f"unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {name!r} was requested but no CUDA device is available")
    return dev


def _allreduce_gradients(params: Sequence[nn.Parameter]) -> None:
    """Sum the gradients over ranks (each rank's loss is its shard's sum divided by the global batch).
    A parameter without a gradient on every rank keeps none, as in a single-process run."""
    like = params[0]
    grads = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params]
    present = torch.tensor([p.grad is not None for p in params], dtype=like.dtype, device=like.device)
    flat = torch.cat([*grads, present])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    present = flat[-len(params):]
    for k, p in enumerate(params):
        g = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
        if present[k] > 0:
            p.grad = g.clone()
        else:
            p.grad = None


def _broadcast_module(net: nn.Module) -> None:
    for t in list(net.parameters()) + list(net.buffers()):
        dist.broadcast(t.data, src=0)


# ---------------------------------------------------------------------------------------------------------
# the model: ONNX template, loaded module, write-back of trained parameters
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Binding:
    """One trained tensor of the fx module and the ONNX initializer it is written back to."""

    tensor: str
    initializer: str
    to_onnx: Callable[[Tensor], Tensor]


def describe_source(source: str | os.PathLike[str] | nn.Module) -> str:
    """A short text identifying the model source (recorded in the checkpoint)."""
    if isinstance(source, nn.Module):
        return f"module:{type(source).__name__}"
    if is_onnx_path(source):
        return f"onnx:{Path(source).name}"
    return f"arch:{source}"


def is_onnx_path(source: str | os.PathLike[str]) -> bool:
    """A path object, a name ending in ``.onnx`` or an existing file (anything else names an architecture)."""
    return (isinstance(source, os.PathLike) or str(source).lower().endswith(".onnx")
            or Path(str(source)).is_file())


def build_template(source: str | os.PathLike[str] | nn.Module, input_shape: Sequence[int], num_classes: int,
                   config: TrainConfig) -> onnx.ModelProto:
    """The ONNX graph the run trains: a given ONNX file, or a built-in architecture / torch module exported
    to ONNX (initialised with ``config.seed``)."""
    if config.normalize is not None and (isinstance(source, nn.Module) or is_onnx_path(source)):
        raise InvalidInputError("normalize builds a layer into a built-in architecture; a given model keeps "
                                "its own preprocessing")
    if not isinstance(source, nn.Module) and is_onnx_path(source):
        return read_model(source)
    from onnxdual.training.architectures import build_architecture, export_onnx

    if isinstance(source, nn.Module):
        module = source
    else:
        torch.manual_seed(config.seed)
        module = build_architecture(str(source), tuple(input_shape), num_classes=num_classes,
                                    normalize=config.normalize)
    with tempfile.TemporaryDirectory(prefix="onnxdual-train-") as tmp:
        path = Path(tmp) / "init.onnx"
        export_onnx(module, tuple(input_shape), path)
        return read_model(path)


def parameter_bindings(model: onnx.ModelProto, net: fx.GraphModule) -> list[_Binding]:
    """Map every trainable tensor of ``net`` (from :func:`onnxdual.load` of ``model``) to its initializer.

    onnx2torch names each module after its ONNX node (``OnnxGraph`` unique names) and builds ``nn.Conv*``
    from Conv (weight = input 1, bias = input 2), ``nn.Linear`` from Gemm with constant operands (weight
    ``alpha * B``, transposed when ``transB = 0``; bias ``beta * C``) and ``nn.BatchNorm*`` from
    BatchNormalization (scale, bias, mean, var = inputs 1..4). Constants that onnx2torch keeps as buffers
    (MatMul/Add operands, ...) are not trained. Raises :class:`InvalidInputError` for a trainable tensor
    that cannot be written back, or an initializer shared by several nodes (training would untie it).
    """
    from onnx2torch.onnx_graph import OnnxGraph

    modules = dict(net.named_modules())
    initializers = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    bindings: list[_Binding] = []

    def bind(module_name: str, attr: str, node: onnx.NodeProto, position: int,
             to_onnx: Callable[[Tensor], Tensor] = lambda t: t) -> None:
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
        bindings.append(_Binding(f"{module_name}.{attr}" if module_name else attr, name, to_onnx))

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
        else:
            raise InvalidInputError(f"cannot train node {node.name or node.op_type!r} ({node.op_type}): "
                                    "onnxdual does not know where its trained parameters go in the graph")
    bound = {b.tensor for b in bindings}
    loose = [name for name, _ in net.named_parameters() if name not in bound]
    if loose:
        raise InvalidInputError(f"cannot map trained parameter(s) {', '.join(loose[:3])} "
                                "back to the ONNX graph")
    if not any(True for _ in net.parameters()):
        raise InvalidInputError("the model has no trainable parameters (weights of Conv, Gemm or "
                                "BatchNormalization nodes)")
    return bindings


def trained_model(template: onnx.ModelProto, net: nn.Module, bindings: Sequence[_Binding]) -> onnx.ModelProto:
    """A copy of ``template`` whose initializers hold ``net``'s current parameters."""
    model = onnx.ModelProto()
    model.CopyFrom(template)
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
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    xs = x.detach().to("cpu", torch.float32)
    got = sess.run(None, {sess.get_inputs()[0].name: xs.numpy()})[0]
    with torch.no_grad():
        param = next(net.parameters())
        expected = net(xs.to(param.device)).to("cpu").numpy()
    diff = float(np.abs(got.reshape(expected.shape) - expected).max())
    scale = max(1.0, float(np.abs(expected).max()))
    if not diff <= tol * scale:
        raise RuntimeError(f"exported ONNX model differs from the trained network by {diff:.3g} (bug)")
    return diff


# ---------------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------------
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file in the same directory and
    :func:`os.replace`: a reader sees the old file or the new one, never a partial one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def prepare_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir`` or raise :class:`InvalidInputError` saying why it cannot be used."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"output directory {str(out)!r} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"cannot create output directory {str(out)!r}: "
                                f"{exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InvalidInputError(f"output directory {str(out)!r} is not writable")
    return out


def write_metrics_csv(path: Path, history: Sequence[Mapping[str, float]]) -> None:
    """``metrics.csv`` from the whole history, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(METRIC_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in METRIC_COLUMNS})
    atomic_write_bytes(path, buf.getvalue().encode())


def _rng_state(proj_gen: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "projection": proj_gen.get_state(),
        "cuda": (torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized()
                 else None),
    }
    return state


def _set_rng_state(state: Mapping[str, Any], proj_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    proj_gen.set_state(state["projection"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _fingerprint(data: TrainData) -> list[float]:
    """A cheap identity of a training set: its size, shape and sums (a resumed run must use the same)."""
    return [float(data.x.shape[0]), float(data.x[0].numel()), float(data.x.double().sum()),
            float(data.y.double().sum()), float((data.y.double() * torch.arange(data.y.shape[0])).sum())]


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InvalidInputError(f"nothing to resume: {path} does not exist") from None
    except Exception as exc:
        raise InvalidInputError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InvalidInputError(f"{path} is not an onnxdual training checkpoint")
    return ckpt


# ---------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------
def _check_data(net: nn.Module, data: TrainData) -> int:
    if data.x.dim() < 2 or data.x.shape[0] == 0:
        raise InvalidInputError("the training set is empty")
    if data.y.shape[0] != data.x.shape[0]:
        raise InvalidInputError(f"{data.x.shape[0]} training inputs but {data.y.shape[0]} labels")
    with torch.no_grad():
        try:
            n_out = net(data.x[:1].to(next(net.parameters()).device)).flatten(1).shape[1]
        except Exception as exc:
            raise InvalidInputError(f"training inputs of shape {tuple(data.x.shape[1:])} do not fit the "
                                    f"model: {str(exc).splitlines()[0]}") from exc
    if (data.y < 0).any() or (data.y >= n_out).any():
        raise InvalidInputError(f"labels must lie in [0, {n_out - 1}] for a model with {n_out} outputs; "
                                f"found {int(data.y.min())}..{int(data.y.max())}")
    return n_out


def _make_optimizer(config: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate)
    return torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum)


def _reinitialise(net: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    for module in net.modules():
        if list(module.parameters(recurse=False)) and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def train(model_source: str | os.PathLike[str] | nn.Module | None, train_data: TrainData, config: TrainConfig,
          out_dir: str | os.PathLike[str], *, resume: bool = False,
          callbacks: Sequence[TrainCallback] = ()) -> TrainResult:
    """Robustly train a network on ``train_data`` and export it to ``out_dir/model.onnx``.

    Args:
        model_source: an ONNX file (``.onnx`` path; fine-tuned, or re-initialised with ``config.reinit``),
            a built-in architecture name (``"small"``, ``"large"``, ``"resnet"``, ``"wide:K"``,
            ``"deep:K"``; see :mod:`onnxdual.training.architectures`) or a torch module the ONNX exporter
            can export. With ``resume=True`` it may be ``None`` (the checkpoint holds the model).
        train_data: inputs ``x`` (N, C, H, W) and labels ``y``.
        config: the run's settings.
        out_dir: where checkpoint, metrics and model go (created if needed).
        resume: continue the run whose ``checkpoint.pt`` is in ``out_dir``.
        callbacks: progress hooks (:class:`TrainCallback`).

    Raises:
        InvalidInputError: for anything the caller can fix (bad data, a busy or unwritable ``out_dir``,
            nothing to resume, a resume with different settings or data).
    """
    t0 = time.perf_counter()
    world = dist_info()
    out = prepare_out_dir(out_dir)
    ckpt_path = out / CHECKPOINT
    ckpt: dict[str, Any] | None = None
    if train_data.x.dim() < 2 or train_data.x.shape[0] == 0:
        raise InvalidInputError("the training set is empty")
    fingerprint = _fingerprint(train_data)
    if resume:
        ckpt = read_checkpoint(ckpt_path)
        saved = TrainConfig.from_dict(ckpt["config"])
        changed = sorted(f.name for f in fields(TrainConfig) if f.name not in RESUMABLE_CHANGES
                         and getattr(saved, f.name) != getattr(config, f.name))
        if changed:
            raise InvalidInputError(f"cannot resume {out}: the run used different settings "
                                    f"({', '.join(f'{k}={getattr(saved, k)!r}' for k in changed)})")
        if model_source is not None and describe_source(model_source) != ckpt["source"]:
            raise InvalidInputError(f"cannot resume {out}: it trained {ckpt['source']}, "
                                    f"not {describe_source(model_source)}")
        if ckpt["fingerprint"] != fingerprint:
            raise InvalidInputError(f"cannot resume {out}: the training data differs from the checkpoint's")
        if int(ckpt["world_size"]) != world.world_size:
            raise InvalidInputError(f"cannot resume {out} exactly: it was written by {ckpt['world_size']} "
                                    f"process(es), this run has {world.world_size}")
    elif ckpt_path.exists():
        raise InvalidInputError(f"{out} already holds a training run ({CHECKPOINT}); resume it or choose "
                                "another output directory")
    elif model_source is None:
        raise InvalidInputError("no model given to train")

    device = resolve_device(config.device)
    input_shape = tuple(train_data.x.shape[1:])
    if ckpt is not None:
        template = onnx.load_from_string(ckpt["template"])
        source = ckpt["source"]
    else:
        assert model_source is not None
        n_classes = int(getattr(train_data, "num_classes", 0) or int(train_data.y.max()) + 1)
        template = build_template(model_source, input_shape, n_classes, config)
        source = describe_source(model_source)
    net = load(template)
    net.to(device).eval()  # inference mode throughout: BN with fixed statistics (App. B.5), no dropout
    if config.reinit and ckpt is None and not isinstance(model_source, nn.Module) and \
            is_onnx_path(model_source):  # type: ignore[arg-type]
        _reinitialise(net, config.seed)
    bindings = parameter_bindings(template, net)
    _check_data(net, train_data)
    params = [p for p in net.parameters()]

    n = train_data.x.shape[0]
    batch = min(config.batch_size, n)
    if world.world_size > batch:
        raise InvalidInputError(f"a global batch of {batch} example(s) cannot be shared by "
                                f"{world.world_size} processes; use a larger batch size or fewer processes")
    steps_per_epoch = n // batch  # the last partial batch of each (reshuffled) epoch is dropped
    eps_start = resolve_eps_start(config, input_shape, getattr(train_data, "name", ""))
    optimizer = _make_optimizer(config, params)
    data_gen = torch.Generator().manual_seed(config.seed)
    proj_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        data_gen.set_state(ckpt["rng"]["data_order"])
        _set_rng_state(ckpt["rng"]["ranks"][world.rank], proj_gen)
        history = [dict(r) for r in ckpt["history"]]
        start_epoch = int(ckpt["epoch"])
    elif world.active:
        _broadcast_module(net)  # identical initial weights on every rank

    x_all = train_data.x.to(device, torch.float32)
    y_all = train_data.y.to(device, torch.int64)
    template_bytes = template.SerializeToString() if world.main else b""
    clip = config.effective_clip
    for epoch in range(start_epoch, config.epochs):
        epoch_t0 = time.perf_counter()
        lr = lr_at(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        perm = torch.randperm(n, generator=data_gen).to(device)
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # robust CE, robust err, clean err, count
        for cb in callbacks:
            cb.on_epoch_start(epoch + 1, config.epochs, steps_per_epoch)
        eps = eps_at(config, epoch * steps_per_epoch, steps_per_epoch, eps_start)
        for s in range(steps_per_epoch):
            step = epoch * steps_per_epoch + s
            eps = eps_at(config, step, steps_per_epoch, eps_start)
            index = perm[s * batch:(s + 1) * batch].tensor_split(world.world_size)[world.rank]
            xb, yb = x_all[index], y_all[index]
            optimizer.zero_grad(set_to_none=True)
            ce, err = robust_loss(net, eps, xb, yb, config.norm, config.proj, clip=clip, generator=proj_gen,
                                  size_average=False)
            # sum over this rank's shard / global batch: summed over ranks it is the global mean (§3)
            (ce.sum() / batch).backward()
            if world.active:
                _allreduce_gradients(params)
            optimizer.step()
            with torch.no_grad():
                clean = (net(xb).flatten(1).argmax(1) != yb).to(torch.float64)
                local = torch.stack([ce.detach().sum().double(), err.detach().sum().double(), clean.sum(),
                                     torch.tensor(float(yb.shape[0]), dtype=torch.float64, device=device)])
                sums += local
            if callbacks:
                k = max(1.0, float(yb.shape[0]))
                step_metrics = {"epoch": epoch + 1, "step": step + 1, "eps": eps, "lr": lr,
                                "robust_loss": float(local[0]) / k,
                                "robust_err_estimate": float(local[1]) / k, "clean_err": float(local[2]) / k}
                for cb in callbacks:
                    cb.on_step(s + 1, steps_per_epoch, step_metrics)
        if world.active:
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        count = max(1.0, float(sums[3]))
        row = {"epoch": epoch + 1, "robust_loss": float(sums[0]) / count,
               "robust_err_estimate": float(sums[1]) / count, "clean_err": float(sums[2]) / count,
               "eps": eps, "lr": lr, "seconds": round(time.perf_counter() - epoch_t0, 3)}
        history.append(row)
        rank_states = [_rng_state(proj_gen)]
        if world.active:
            gathered: list[Any] = [None] * world.world_size
            dist.all_gather_object(gathered, rank_states[0])
            rank_states = gathered
        if world.main:
            checkpoint = {
                "format": CHECKPOINT_FORMAT, "version": 1, "epoch": epoch + 1,
                "step": (epoch + 1) * steps_per_epoch, "model": net.state_dict(),
                "optimizer": optimizer.state_dict(), "template": template_bytes, "source": source,
                "config": config.to_dict(), "fingerprint": fingerprint,
                "world_size": world.world_size,
                "rng": {"data_order": data_gen.get_state(), "ranks": rank_states}, "history": history,
            }
            buf = io.BytesIO()
            torch.save(checkpoint, buf)
            atomic_write_bytes(ckpt_path, buf.getvalue())
            write_metrics_csv(out / METRICS, history)
            if config.export_epochs:
                atomic_write_bytes(out / f"epoch_{epoch + 1:02d}.onnx",
                                   trained_model(template, net, bindings).SerializeToString())
        if world.active:
            dist.barrier()
        for cb in callbacks:
            cb.on_epoch(row)

    model_path = out / MODEL
    if world.main:
        final = trained_model(template, net, bindings)
        check_onnx_parity(final, net, train_data.x[:16])
        atomic_write_bytes(model_path, final.SerializeToString())
        if ckpt is not None and start_epoch >= config.epochs:
            write_metrics_csv(out / METRICS, history)
    if world.active:
        dist.barrier()
    return TrainResult(out, model_path, history, net, config, [b.tensor for b in bindings],
                       resumed_from_epoch=start_epoch if ckpt is not None else None,
                       seconds=time.perf_counter() - t0)


def software_versions() -> dict[str, str]:
    """Versions of the packages a trained model or report depends on (recorded in manifests)."""
    from importlib import metadata

    import onnxdual

    versions = {"onnxdual": onnxdual.__version__, "torch": torch.__version__, "onnx": onnx.__version__}
    for package in ("onnx2torch", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:  # pragma: no cover
            versions[package] = "?"
    versions["python"] = platform.python_version()
    return versions


# ---------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    """Exact certification and PGD of a trained model (or cascade) on a test set."""

    result: CertifyResult
    summary: pd.DataFrame
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def overall(self) -> dict[str, float]:
        """The ``stage == "all"`` row of the summary for the first eps."""
        row = self.summary[self.summary.stage == "all"].iloc[0]
        keys = ("eps", "n", "clean_accuracy", "certified_accuracy", "pgd_accuracy")
        return {k: float(row[k]) for k in keys}


def evaluate(model_path: str | os.PathLike[str], test_data: TrainData, *, eps: float, norm: str = "linf",
             clip: tuple[float, float] | None = (0.0, 1.0), batch_size: int = 100, pgd_steps: int = 40,
             seed: int = 0, device: str = "cpu", report_dir: str | os.PathLike[str] | None = None,
             meta: Mapping[str, Any] | None = None,
             progress: Callable[[int], None] | None = None) -> EvalResult:
    """Certify ``model_path`` (an ONNX file or a cascade manifest) on ``test_data`` with exact bounds and
    attack it with PGD (:func:`onnxdual.certify.certify`); write the report to ``report_dir``.

    Raises :class:`SoundnessError` -- after writing the report -- when a certified example is broken by the
    attack, i.e. when the certified (robust) error lies below the PGD error: the bound would be wrong.
    """
    from onnxdual.certify import CertifySettings, certify, load_stages

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    dev = resolve_device(device)
    stages = load_stages(model_path)
    for stage in stages:
        stage.net.to(dev)
    settings = CertifySettings(eps=(float(eps),), norm=norm, clip=clip if norm == "linf" else None,
                               batch_size=batch_size, pgd_steps=pgd_steps, seed=seed)
    result = certify(stages, test_data.x.to(dev, torch.float32), test_data.y.to(dev, torch.int64), settings,
                     progress)
    summary = result.summary_frame()
    paths: dict[str, Path] = {}
    examples = result.examples_frame()
    broken = examples[examples.certified & examples.pgd_success]
    overall = summary[summary.stage == "all"]
    if report_dir is not None:
        from onnxdual.reports import write_certify_report

        info = {"model": str(model_path), "stages": [s.path.name for s in stages],
                "dataset": f"{getattr(test_data, 'name', 'test')} ({test_data.x.shape[0]} examples)",
                "norm": norm, "eps": [float(eps)],
                "clip": list(clip) if clip is not None and norm == "linf" else None, "bound": "exact",
                "device": str(dev), "versions": software_versions(),
                "started": started.isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - t0, 3), "seed": seed, "pgd_steps": pgd_steps,
                "soundness_violations": len(result.violations) + len(broken)}
        info.update(dict(meta or {}))
        paths = dict(write_certify_report(Path(report_dir), examples, summary, info, result.cascade_frame()))
    if result.violations or len(broken) or \
            (overall.certified_accuracy > overall.pgd_accuracy + 1e-12).any():
        first = result.violations[0]["index"] if result.violations else \
            (int(broken.iloc[0]["index"]) if len(broken) else "?")
        raise SoundnessError(f"soundness violation: robust error below PGD error on {model_path} "
                             f"({len(result.violations) + len(broken)} certified example(s) broken by the "
                             f"attack, first: example {first}); please report this bug")
    return EvalResult(result, summary, paths)


__all__ = [
    "TrainConfig", "TrainCallback", "TrainResult", "TrainData", "ArrayData", "train", "evaluate",
    "EvalResult", "SoundnessError", "eps_at", "lr_at", "default_eps_start", "resolve_eps_start",
    "init_distributed", "dist_info", "DistInfo", "resolve_device", "torchrun_world_size",
    "parameter_bindings", "trained_model", "check_onnx_parity", "build_template", "describe_source",
    "is_onnx_path", "software_versions", "read_checkpoint", "atomic_write_bytes", "prepare_out_dir",
    "write_metrics_csv", "CHECKPOINT", "METRICS", "MODEL", "METRIC_COLUMNS", "DEFAULT_LR",
]
