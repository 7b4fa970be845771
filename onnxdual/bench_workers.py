"""A pool of worker processes deciding benchmark instances, one at a time each, on one thread each -- as
VNN-COMP runs a verifier: every instance gets its own time limit, and no instance is lost to another's
failure.

The parent deals instances to idle workers and collects one row per instance. A worker reports when it
starts an instance's clock (its network loaded, as in one process: the load is not part of the timeout);
the instance's own deadline (the verifier's) is the honest limit, and a worker still on it ``grace`` seconds
past it is killed: the instance is a ``timeout`` (a worker that takes :data:`STARTUP` seconds to start and
load the network is killed too). A worker that dies mid-instance (a crash, a kill
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
#: seconds past its timeout (counted from its start) an instance may run before its worker is killed
GRACE = 60.0
#: seconds a worker may take to start and to load an instance's network before the instance's own time counts
STARTUP = 600.0


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

    import onnxdual.specs  # noqa: F401  (imported before the first instance: not on its clock)
    import onnxdual.verify  # noqa: F401

    torch.set_num_threads(1)
    networks: dict = {}
    while True:
        item = conn.recv()
        if item is None:
            return
        index, inst = item

        def started() -> None:
            conn.send(("start", index, None))
            _fault(inst.name)

        try:
            conn.send(("done", index, decide(inst, options, networks, started)))
        except Exception as exc:  # a bug in deciding one instance must not lose the others
            first = str(exc).splitlines()[0] if str(exc) else ""
            conn.send(("failed", index, f"internal error: {type(exc).__name__}: {first}"))


@dataclass
class _Worker:
    process: Any
    conn: Connection
    index: int | None = None  # the instance it is on
    limit: float | None = None  # when it is killed (monotonic): STARTUP after the instance was sent, then
    # timeout + grace after the instance's time started
    counting: bool = False  # the instance's time has started


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
        w.index = w.limit = None
        w.counting = False

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
                    w.limit = time.monotonic() + STARTUP
                    w.conn.send((w.index, inst))
            busy = [w for w in pool if w.index is not None]
            timeout = max(0.0, min(w.limit for w in busy) - time.monotonic())
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout))
            for w in busy:
                if w.conn in ready:
                    try:
                        kind, _, value = w.conn.recv()
                    except (EOFError, OSError):
                        kind = "died"
                    if kind == "start":
                        w.limit = time.monotonic() + options.timeout(instances[w.index]) + grace
                        w.counting = True
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
                elif time.monotonic() > w.limit:
                    limit = options.timeout(instances[w.index])
                    late = f"killed: still running {grace:g} s after its {limit:g} s limit"
                    slow = f"killed: its worker took over {STARTUP:g} s to start and load the network"
                    replace(w, "timeout", late if w.counting else slow)
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
