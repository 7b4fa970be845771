"""Certification on several processes (``torchrun``): which batches a rank certifies, the random streams of a
batch, one decision shared by all ranks, and the gather that makes the ranks' records one run's.

A run on N ranks equals a one-process run value for value: the examples are cut into the one-process run's
batches (``batch_size`` examples from index 0, so every bound is computed on the same batch as alone) and
rank ``r`` takes a contiguous block of them (:func:`shard_batches`); the PGD starts and random projections
of a batch come from generators seeded by the run's seed, the eps and the batch's first index
(:func:`batch_generator`), not from one stream consumed in order, so they do not depend on which rank or
how many ranks ran the batches before it; a decision that rests on a measured time (``--relaxation auto``)
is taken on rank 0 and broadcast (:func:`agree`). :func:`gather_result` puts every rank's records back in
the one-process order on every rank and records each rank's throughput.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from onnxdual.distributed import DistInfo, backend, broadcast_object, gather_objects, host

#: :class:`onnxdual.certify.run.CertifyResult` (not imported: run imports this module)
CertifyResult = Any

T = TypeVar("T")

#: the random streams of a batch (:func:`batch_generator`)
PGD_STREAM, PROJECTION_STREAM = 0, 1


def shard_batches(n: int, batch_size: int, world: DistInfo) -> range:
    """First indices of the batches rank ``world.rank`` certifies: the one-process run's batches
    ``0, batch_size, 2 batch_size, ...`` cut into ``world_size`` contiguous blocks whose sizes differ by at
    most one batch (a rank may get none when there are fewer batches than ranks)."""
    batches = math.ceil(n / batch_size) if n > 0 else 0
    lo = batches * world.rank // world.world_size
    hi = batches * (world.rank + 1) // world.world_size
    return range(lo * batch_size, hi * batch_size, batch_size)


def batch_generator(seed: int, stream: int, eps_index: int, start: int) -> torch.Generator:
    """A CPU generator for one batch (the batch starting at example ``start``, at the ``eps_index``-th eps)
    and one use (``stream``: :data:`PGD_STREAM`, :data:`PROJECTION_STREAM`): the same on every rank and in
    every run with that seed, independent of the batches before it."""
    state = np.random.SeedSequence([seed, stream, eps_index, start]).generate_state(2, np.uint32)
    return torch.Generator(device="cpu").manual_seed(int(state[0]) << 32 | int(state[1]))


def agree(decide: Callable[[], T], world: DistInfo) -> T:
    """``decide()`` run on rank 0 only and its answer on every rank."""
    return broadcast_object(decide() if world.main else None, world)


def rank_entry(result: CertifyResult, world: DistInfo, seconds: float, device: str) -> dict[str, Any]:
    """What a rank did: where it ran, how many examples, in how many seconds (bounds and PGD, every eps)."""
    examples = len({r["index"] for r in result.records})
    pairs = examples * len(result.settings.eps)
    return {"rank": world.rank, "host": host(), "device": device, "backend": backend(), "examples": examples,
            "seconds": round(seconds, 3), "bound_seconds": round(sum(result.seconds.values()), 3),
            "examples_per_second": round(pairs / seconds, 3) if seconds > 0 else math.nan}


def gather_result(result: CertifyResult, world: DistInfo, seconds: float, device: str,
                  keep: int | None = None) -> CertifyResult:
    """The whole run's result on every rank: the ranks' records in the one-process order, each eps's bound
    time the slowest rank's (the ranks work at once) and :attr:`CertifyResult.ranks` the per-rank entries.
    Thumbnails (``result.adversarials``): the first ``keep`` of each (eps, outcome), as one process keeps
    them. A single process gets its own result back, unchanged."""
    if not world.active:
        return result
    kept = getattr(result, "adversarials", None)
    mine = (result.records, result.stage_records, result.seconds, rank_entry(result, world, seconds, device),
            kept)
    parts = gather_objects(mine, world)
    n_eps = len(result.settings.eps)
    # every rank's lists run eps by eps (the certify loop's outer loop), each eps the same length; blocks of
    # batches in rank order, eps by eps, give the one-process order
    result.records = _interleave([p[0] for p in parts], n_eps)
    result.stage_records = _interleave([p[1] for p in parts], n_eps)
    result.seconds = {eps: max(p[2].get(eps, 0.0) for p in parts) for eps in result.settings.eps}
    result.ranks = [p[3] for p in parts]
    if kept is not None:
        result.adversarials = _first_kept([a for p in parts for a in p[4]], result.settings.eps, keep)
    return result


def _interleave(per_rank: list[list[dict]], n_eps: int) -> list[dict]:
    out: list[dict] = []
    chunks = [len(rows) // n_eps for rows in per_rank]
    for e in range(n_eps):
        for rows, size in zip(per_rank, chunks):
            out.extend(rows[e * size:(e + 1) * size])
    return out


def _first_kept(kept: list[dict], eps: tuple[float, ...], keep: int | None) -> list[dict]:
    """The examples a one-process run keeps for thumbnails: in its order (eps by eps, then by index), the
    first ``keep`` of each (eps, outcome); every rank kept the first ones of its own shard."""
    ordered = sorted(kept, key=lambda a: (eps.index(a["eps"]), a["index"]))
    counts: dict[tuple[float, str], int] = {}
    out = []
    for a in ordered:
        key = (a["eps"], a["outcome"])
        if keep is None or counts.get(key, 0) < keep:
            counts[key] = counts.get(key, 0) + 1
            out.append(a)
    return out


def describe_ranks(ranks: list[dict]) -> str:
    """One line for a report: how many ranks on which devices and machines, and each rank's throughput."""
    devices = sorted({r["device"] for r in ranks})
    hosts = sorted({r["host"] for r in ranks})
    rates = ", ".join(f"rank {r['rank']} {r['examples']} examples {r['examples_per_second']:g}/s"
                      for r in ranks)
    return (f"{len(ranks)} ranks ({ranks[0]['backend']}) on {', '.join(devices)}, {len(hosts)} machine(s) "
            f"({', '.join(hosts)}): {rates}")


__all__ = ["shard_batches", "batch_generator", "agree", "gather_result", "rank_entry", "describe_ranks",
           "PGD_STREAM", "PROJECTION_STREAM"]
