"""Where a training process runs: its device and its place in a :mod:`torch.distributed` process group
(``torchrun``), and the collective operations data-parallel training needs.

Data parallel training: every rank takes a disjoint, contiguous shard of each global batch, computes
the summed robust loss of its shard divided by the global batch size, and the gradients are summed over
ranks before the optimiser step -- exactly the gradient of the global batch's mean loss. The dual network
uses the network's parameters outside ``forward``, which ``DistributedDataParallel``'s hooks would not see,
hence the explicit all-reduce (:func:`allreduce_gradients`). All ranks start from rank 0's weights
(:func:`broadcast_module`) and draw the same random projections, so a run on N processes equals a
single-process run on the same global batches up to floating-point rounding. The collectives assume an
initialised group: callers check :attr:`DistInfo.active` first, so a single-process run never touches
:mod:`torch.distributed`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from onnxdual.errors import InvalidInputError


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


def shutdown_distributed() -> None:
    """Leave the process group (the end of a ``torchrun`` command)."""
    dist.destroy_process_group()


def allreduce_gradients(params: Sequence[nn.Parameter]) -> None:
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


def broadcast_module(net: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (identical initial weights)."""
    for t in list(net.parameters()) + list(net.buffers()):
        dist.broadcast(t.data, src=0)


def all_reduce_sum(t: Tensor) -> None:
    """Sum ``t`` over ranks, in place."""
    dist.all_reduce(t, op=dist.ReduceOp.SUM)


def gather_objects(obj: Any, world: DistInfo) -> list[Any]:
    """``obj`` of every rank, in rank order, on every rank."""
    gathered: list[Any] = [None] * world.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait until every rank gets here."""
    dist.barrier()


def run_sharded(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``fn(x)`` (one bool per example of ``x``) with each rank doing a contiguous share; the result, on the
    CPU, is the same on every rank."""
    world = dist_info()
    if not world.active:
        return fn(x).to("cpu", torch.bool)
    bounds = np.linspace(0, x.shape[0], world.world_size + 1).astype(int)
    lo, hi = int(bounds[world.rank]), int(bounds[world.rank + 1])
    mask = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    if hi > lo:
        mask[lo:hi] = fn(x[lo:hi]).to(torch.int64)
    all_reduce_sum(mask)
    return mask.to("cpu").bool()


__all__ = ["DistInfo", "dist_info", "torchrun_world_size", "resolve_device", "init_distributed",
           "shutdown_distributed", "allreduce_gradients", "broadcast_module", "all_reduce_sum",
           "gather_objects", "barrier", "run_sharded"]
