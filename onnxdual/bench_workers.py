"""A pool of worker processes deciding benchmark instances, one at a time each, on one thread each -- as
VNN-COMP runs a verifier: every instance gets its own time limit, and no instance is lost to another's
failure.

The parent deals instances to idle workers and collects one row per instance. A worker reports when it
starts an instance; the instance's own deadline (the verifier's) is the honest limit, and a worker still on
it ``timeout + grace`` seconds after its start (``grace`` covers the network's first load, which the timeout
does not limit) is killed: the instance is a ``timeout``. A worker that dies mid-instance (a crash, a kill
from outside, running out of memory) makes that instance an ``error`` saying so; either way a fresh worker
takes the next instance, and the run ends with a row for every instance.

``ONNXDUAL_BENCH_FAULT=exit:NAME`` (or ``hang:NAME``) makes a worker exit at once (or hang) when it starts the
instance named ``NAME``: the deterministic fault the tests inject.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

#: ``decide(instance, options, networks) -> row`` (:func:`onnxdual.bench.decide_instance`)
Decide = Callable[[Any, Any, dict], dict]
#: ``fail_row(instance, timeout, answer, note) -> row`` (:func:`onnxdual.bench.empty_row`)
FailRow = Callable[..., dict]
FAULT_VARIABLE = "ONNXDUAL_BENCH_FAULT"
#: seconds past its timeout (after it started) an instance may run before its worker is killed
GRACE = 60.0


def _fault(name: str) -> None:
    kind, _, target = os.environ.get(FAULT_VARIABLE, "").partition(":")
    if target and target == name:
        if kind == "exit":
            os._exit(70)
        if kind == "hang":
            while True:
                time.sleep(60)


def _work(conn: Connection, decide: Decide, options: Any) -> None:
    """A worker: decide what the parent sends, one instance at a time, until it sends ``None``."""
    import torch

    torch.set_num_threads(1)
    networks: dict = {}
    while True:
        item = conn.recv()
        if item is None:
            return
        index, inst = item
        conn.send(("start", index, None))
        _fault(inst.name)
        try:
            conn.send(("done", index, decide(inst, options, networks)))
        except Exception as exc:  # a bug in deciding one instance must not lose the others
            first = str(exc).splitlines()[0] if str(exc) else ""
            conn.send(("failed", index, f"internal error: {type(exc).__name__}: {first}"))


@dataclass
class _Worker:
    process: Any
    conn: Connection
    index: int | None = None  # the instance it is on
    started: float | None = None  # when it reported the start (monotonic)


def decide_in_pool(decide: Decide, fail_row: FailRow, instances: list, options: Any, workers: int,
                   progress: Callable[[Any, dict], None] | None = None, grace: float = GRACE) -> list[dict]:
    """One row per instance, in the order of ``instances``, decided by ``workers`` worker processes."""
    ctx = mp.get_context("spawn")
    pending = deque(enumerate(instances))
    rows: list[dict | None] = [None] * len(instances)
    pool: list[_Worker] = []

    def start() -> _Worker:
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_work, args=(child, decide, options), daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def finish(w: _Worker, row: dict) -> None:
        rows[w.index] = row
        if progress is not None:
            progress(instances[w.index], row)
        w.index = w.started = None

    def replace(w: _Worker, answer: str, note: str) -> None:
        inst = instances[w.index]
        finish(w, fail_row(inst, options.timeout(inst), answer, note))
        w.process.kill()
        w.process.join()
        w.conn.close()
        pool[pool.index(w)] = start()

    try:
        pool.extend(start() for _ in range(min(workers, len(instances))))
        while pending or any(w.index is not None for w in pool):
            for w in pool:
                if w.index is None and pending:
                    w.index, inst = pending.popleft()
                    w.conn.send((w.index, inst))
            busy = [w for w in pool if w.index is not None]
            limits = [w.started + options.timeout(instances[w.index]) + grace for w in busy if w.started]
            timeout = max(0.0, min(limits) - time.monotonic()) if limits else None
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout))
            for w in busy:
                if w.conn in ready:
                    try:
                        kind, _, value = w.conn.recv()
                    except (EOFError, OSError):
                        kind = "died"
                    if kind == "start":
                        w.started = time.monotonic()
                        continue
                    if kind == "done":
                        finish(w, value)
                        continue
                    if kind == "failed":
                        inst = instances[w.index]
                        finish(w, fail_row(inst, options.timeout(inst), "error", value))
                        continue
                if w.process.sentinel in ready or (w.conn in ready and not w.process.is_alive()):
                    w.process.join()
                    replace(w, "error", f"the worker deciding it died (exit code {w.process.exitcode})")
                elif w.started is not None:
                    limit = options.timeout(instances[w.index])
                    if time.monotonic() > w.started + limit + grace:
                        replace(w, "timeout", f"killed: still running {grace:g} s after its {limit:g} s limit")
        for w in pool:
            try:
                w.conn.send(None)
            except OSError:  # it died after its last instance: nothing is lost
                pass
    finally:
        for w in pool:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
    assert all(r is not None for r in rows)
    return rows  # type: ignore[return-value]


__all__ = ["decide_in_pool", "FAULT_VARIABLE", "GRACE"]
