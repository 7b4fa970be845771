"""Where a process runs: its device, and its place in a :mod:`torch.distributed` process group started by
``torchrun`` -- the one implementation training, certification and benchmarks share.

``torchrun`` describes the group in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). :func:`init_distributed` joins it: NCCL when the process runs on CUDA (one
process per GPU, ``cuda:LOCAL_RANK``), gloo on the CPU. The collectives here assume an initialised group:
callers check :attr:`DistInfo.active` first, so a single-process run never touches :mod:`torch.distributed`.
What each command does with its rank -- data-parallel gradients (:mod:`onnxdual.training.distributed`),
shards of examples (:mod:`onnxdual.certify.shards`), shards of instances (:mod:`onnxdual.bench`) -- lives with
that command.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

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
    """Join the process group ``torchrun`` describes: NCCL on CUDA (this rank's GPU is
    ``cuda:LOCAL_RANK`` modulo the GPUs present), gloo on the CPU. Returns this rank's device."""
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise InvalidInputError(f"a distributed run needs {var} in the environment (start with torchrun)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dev


def join_torchrun(device: str = "auto") -> tuple[torch.device, DistInfo]:
    """This process's device and place: the ``torchrun`` group when started by one with more than one
    process (joined here), else the single process on :func:`resolve_device`'s device."""
    if torchrun_world_size() > 1:
        dev = init_distributed(device)
        return dev, dist_info()
    return resolve_device(device), DistInfo()


def shutdown_distributed() -> None:
    """Leave the process group, if one was joined (the end of a ``torchrun`` command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def backend() -> str:
    """The process group's backend (``gloo``, ``nccl``), or ``"none"`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return str(dist.get_backend())
    return "none"


def all_reduce_sum(t: Tensor) -> None:
    """Sum ``t`` over ranks, in place."""
    dist.all_reduce(t, op=dist.ReduceOp.SUM)


def gather_objects(obj: Any, world: DistInfo) -> list[Any]:
    """``obj`` of every rank, in rank order, on every rank (a single process: ``[obj]``)."""
    if not world.active:
        return [obj]
    gathered: list[Any] = [None] * world.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, world: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (a decision that must not differ between ranks, e.g. one that depends
    on a measured time)."""
    if not world.active:
        return obj
    box = [obj if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait until every rank gets here."""
    dist.barrier()


def host() -> str:
    """This machine's name (a report says where each rank ran)."""
    return socket.gethostname()


__all__ = ["DistInfo", "dist_info", "torchrun_world_size", "resolve_device", "init_distributed",
           "join_torchrun", "shutdown_distributed", "backend", "all_reduce_sum", "gather_objects",
           "broadcast_object", "barrier", "host"]
