"""Domains per second of ReLU branch and bound (``onnxdual verify``), CPU time, one thread:

* ``recompute`` -- the previous bounding (:meth:`ReluBranching.bound_domains`): every domain gets its own
  optimised intermediate bounds, batches of 64 (what the search did before inherited bounds);
* ``one at a time`` -- :meth:`ReluBranching.bound_fast` (inherited intermediate bounds, alpha/beta ascent)
  on one domain per call;
* ``batched`` -- the same on the batch size the search picks from its memory budget.

    taskset -c 1 python benchmarks/verify/bench_domains.py [--shared /work/shared] [--out results.md]

Domains are real: the first splits of a VNN-COMP property (roots bounded, then split by the search's own
choice, level by level, until there are enough). Prints a Markdown table (CPU seconds, ``process_time``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from onnxdual.specs import parse_vnnlib
from onnxdual.verify import Deadline, Verifier, load_network
from onnxdual.verify.problem import Problem, batch_cases
from onnxdual.verify.relu_split import Domains, ReluBranching, relu_layers

INSTANCES = [
    ("mnistfc_2021", "onnx/mnist-net_256x2.onnx", "vnnlib/prop_1_0.03.vnnlib"),
    ("mnistfc_2021", "onnx/mnist-net_256x4.onnx", "vnnlib/prop_0_0.03.vnnlib"),
    ("oval21_2021", "onnx/cifar_base_kw.onnx", "vnnlib/cifar_base_kw-img4631-eps0.016339869281045753.vnnlib"),
]


def domains_of(search: ReluBranching, want: int) -> Domains:
    root = search.roots(torch.tensor([0]), search.problem.cases.disjuncts[:1].clone())
    root, margin, bounds, duals = search.bound_roots(root, Deadline(600))
    level = search.split(root, root.open, margin, bounds, duals)[0]
    while len(level) < want:
        margin, _, warm, duals = search.bound_fast(level, Deadline(600), steps=2)
        level.warm = warm
        bounds = {k: (level.lo[k], level.hi[k]) for k in search.layers}
        level = search.split(level, level.open, margin, bounds, duals)[0]
    return level.take(torch.arange(want))


def rate(fn, count: int, seconds: float) -> float:
    """Domains per CPU second of ``fn`` (bounding ``count`` domains per call), over at least ``seconds``."""
    done, start = 0, time.process_time()
    while True:
        fn()
        done += count
        spent = time.process_time() - start
        if spent >= seconds:
            return done / spent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path("/work/shared"))
    ap.add_argument("--seconds", type=float, default=4.0, help="CPU seconds per measurement")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = ["| network | property | ReLUs | rows | batch | recompute (dom/s) | one at a time (dom/s) "
             "| batched (dom/s) | batched / recompute |", "|---|---|---|---|---|---|---|---|---|"]
    for bench, onnx, vnn in INSTANCES:
        root = args.shared / "benchmarks/vnncomp" / bench
        network = load_network(root / onnx)
        prop = parse_vnnlib(root / vnn)
        verifier = Verifier.for_network(network, split_max_inputs=0)
        problem = Problem(verifier.model, batch_cases(prop, network.n_inputs), False)
        layers = relu_layers(network.net, network.example_shape)
        search = ReluBranching(problem, layers)
        rows = int(problem.cases.a.shape[1] * problem.cases.a.shape[2])
        size = search.fast_batch(rows)
        domains = domains_of(search, max(size, 64))
        batch = domains.take(torch.arange(size))
        old = domains.take(torch.arange(64))
        recompute = rate(lambda: search.bound_domains(old, Deadline(600)), 64, args.seconds)
        singles = [batch.take(torch.tensor([i])) for i in range(size)]
        one = rate(lambda: [search.bound_fast(d, Deadline(600)) for d in singles], size, args.seconds)
        many = rate(lambda: search.bound_fast(batch, Deadline(600)), size, args.seconds)
        units = sum(v.numel() for v in domains.phase.values()) // len(domains)
        lines.append(f"| {Path(onnx).stem} | {Path(vnn).stem} | {units} | {rows} | {size} | {recompute:.1f} "
                     f"| {one:.1f} | {many:.1f} | {many / recompute:.1f}x |")
        print(lines[-1], flush=True)
    load = os.getloadavg()
    text = "\n".join(lines) + f"\n\nCPU time (process_time), 1 thread; load average {load[0]:.2f} {load[1]:.2f}.\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
