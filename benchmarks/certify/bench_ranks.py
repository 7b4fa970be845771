"""Certification on 1 and 2 processes (``torchrun``, gloo, one thread each): examples per second of the whole
run and per rank, and the scaling efficiency ``rate(2) / (2 rate(1))``, on the embedded default (shipped model
and sample) and on a subset of mnist_large (reference inputs, labels = the model's predictions).

    python benchmarks/certify/bench_ranks.py [--shared ../shared] [--limit 200] [--large 4] [--cores 0,1]

Each run is timed around ``certify()`` alone (after a barrier, so process start and model loading are left
out) and its examples.csv is checked to equal the one-process run's. The processes are pinned to ``--cores``
(``taskset``); the load average is printed with the figures, which are only as good as the cores were idle.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def rank_main(args) -> None:
    """One rank (or the single process): certify, rank 0 prints one JSON line."""
    import torch

    from onnxdual.certify import CertifySettings, certify, load_stages
    from onnxdual.data import load_dataset
    from onnxdual.distributed import barrier, join_torchrun, shutdown_distributed
    from onnxdual_cli.certify import default_model

    torch.set_num_threads(1)
    dev, world = join_torchrun("cpu")
    if args.case == "default":
        data = load_dataset(None, limit=args.limit)
        stages, x, y = load_stages(default_model()), data.x, data.y
        settings = CertifySettings(eps=(0.1,), clip=(0.0, 1.0), batch_size=args.batch_size,
                                   relaxation="adaptive")
    else:
        stages = load_stages(args.shared / "reference/models/mnist_large.onnx")
        x = torch.load(args.shared / "reference/models/inputs_1x28x28.pt")[:args.large]
        with torch.no_grad():
            y = stages[0].net(x).argmax(1)
        settings = CertifySettings(eps=(0.1,), clip=None, batch_size=args.large_batch, relaxation="paper")
    if world.active:
        barrier()
    t0 = time.perf_counter()
    result = certify(stages, x, y, settings)
    seconds = time.perf_counter() - t0
    if world.main:
        frame = result.examples_frame()
        print(json.dumps({"examples": len(frame), "seconds": seconds, "ranks": result.ranks,
                          "csv": frame.to_csv(index=False)}))
    shutdown_distributed()


def launch(args, processes: int) -> dict:
    cmd = [sys.executable, __file__, "--rank", "--case", args.case, "--limit", str(args.limit),
           "--large", str(args.large), "--batch-size", str(args.batch_size), "--large-batch",
           str(args.large_batch), "--shared", str(args.shared)]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               str(processes), *cmd[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run(["taskset", "-c", args.cores, *cmd], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--limit", type=int, default=200, help="examples of the shipped sample")
    ap.add_argument("--batch-size", type=int, default=20, help="the default case's batch (several per rank)")
    ap.add_argument("--large", type=int, default=4, help="mnist_large examples (tens of seconds each)")
    ap.add_argument("--large-batch", type=int, default=2)
    ap.add_argument("--cores", default="0,1")
    ap.add_argument("--case", default="both", choices=["both", "default", "large"])
    ap.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank:
        return rank_main(args)
    cases = ["default", "large"] if args.case == "both" else [args.case]
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), cores {args.cores}, one thread per process\n")
    print("| case | examples | 1 process ex/s | 2 processes ex/s | per rank ex/s | efficiency | same CSV |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        args.case = case
        one, two = launch(args, 1), launch(args, 2)
        rate1, rate2 = one["examples"] / one["seconds"], two["examples"] / two["seconds"]
        per_rank = ", ".join(f"{r['examples_per_second']:.2f}" for r in two["ranks"])
        name = "embedded default (eps 0.1, adaptive)" if case == "default" else "mnist_large (eps 0.1, paper)"
        print(f"| {name} | {one['examples']} | {rate1:.2f} | {rate2:.2f} | {per_rank} | "
              f"{rate2 / (2 * rate1):.2f} | {one['csv'] == two['csv']} |")
    print(f"\nload after: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
