"""``python benchmarks/startup/first_bound.py OUT ARGS...``: run ``onnxdual ARGS`` (as ``python -m
onnxdual_cli.main``) and write to OUT, as JSON, when the search's first dual bound was done: seconds since the
process started (wall, from /proc) and CPU seconds (user + system) so far, the same when the search began
(``decide_wall``, ``decide_cpu``: what comes before is start-up and loading, what comes after the search's own
work before its first bound: trivial witnesses, the quick attack), then, with ``--exit``, end the
process there (the rest of the search is not what the start-up benchmark measures).

"The first bound" is the end of the first :meth:`onnxdual.DualNetwork.lower_bound` call made inside
:meth:`onnxdual.verify.Verifier.decide` (the bound that load_network's own check computes does not count).
The hook is installed by an import finder that patches the two classes right after their modules run, so it
imports nothing itself and does not change what the command imports or when (bench_startup.py).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import runpy
import sys
import time


def process_seconds() -> float:
    """Wall seconds since this process started (as onnxdual_cli.verify.process_seconds)."""
    with open("/proc/self/stat", "rb") as f:
        start_ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
    with open("/proc/uptime", "rb") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


class _Patch(importlib.abc.MetaPathFinder):
    """Runs ``patch(module)`` right after each of ``targets`` (module name -> patch) is executed."""

    def __init__(self, targets):
        self.targets = dict(targets)

    def find_spec(self, name, path, target=None):
        patch = self.targets.pop(name, None)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    stop = "--exit" in args[:1]
    if stop:
        args = args[1:]
    state = {"inside": 0, "done": False}

    def now() -> tuple[float, float]:
        times = os.times()
        return process_seconds(), times.user + times.system

    def record():
        wall, cpu = now()
        with open(out, "w") as f:
            json.dump({"wall": wall, "cpu": cpu, "decide_wall": state["decide"][0],
                       "decide_cpu": state["decide"][1]}, f)
        if stop:
            sys.stdout.flush()
            os._exit(0)

    def patch_network(module):
        original = module.DualNetwork.lower_bound

        def lower_bound(self, *a, **k):
            result = original(self, *a, **k)
            if state["inside"] and not state["done"]:
                state["done"] = True
                record()
            return result

        module.DualNetwork.lower_bound = lower_bound

    def patch_verifier(module):
        original = module.Verifier.decide

        def decide(self, *a, **k):
            state.setdefault("decide", now())
            state["inside"] += 1
            try:
                return original(self, *a, **k)
            finally:
                state["inside"] -= 1

        module.Verifier.decide = decide

    sys.meta_path.insert(0, _Patch({"onnxdual.engine.network": patch_network,
                                    "onnxdual.verify.verifier": patch_verifier}))
    sys.argv = ["onnxdual", *args]
    runpy.run_module("onnxdual_cli.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
