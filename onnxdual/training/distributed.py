"""The collective operations data-parallel training needs (the process group itself -- device, rank,
joining ``torchrun`` -- is :mod:`onnxdual.distributed`, shared with certification and benchmarks).

Data parallel training: every rank takes a disjoint, contiguous shard of each global batch, computes
the summed robust loss of its shard divided by the global batch size, and the gradients are summed over
ranks before the optimiser step -- exactly the gradient of the global batch's mean loss. The dual network
uses the network's parameters outside ``forward``, which ``DistributedDataParallel``'s hooks would not see,
hence the explicit all-reduce (:func:`allreduce_gradients`). All ranks start from rank 0's weights
(:func:`broadcast_module`) and draw the same random projections, so a run on N processes equals a
single-process run on the same global batches up to floating-point rounding. The collectives assume an
initialised group: callers check :attr:`~onnxdual.distributed.DistInfo.active` first, so a single-process
run never touches :mod:`torch.distributed`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from onnxdual.distributed import all_reduce_sum, dist_info


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


__all__ = ["allreduce_gradients", "broadcast_module", "run_sharded"]
