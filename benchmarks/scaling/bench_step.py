"""Side by side: one robust training step of onnxdual against a plain step and the paper's code (issue 14).

For each network (mnist_small = the paper's small MNIST net; Wide(k), App. G), thread count and method
(plain cross-entropy step, random projections r = 10 / 50, exact bounds), one training step on a batch of 50
random 28x28 images, eps 0.1 (l-inf, not clipped), ``robust_loss`` + backward + Adam, is timed in a fresh
process: the median of ``--repeats`` steps after one warm-up (``--exact-repeats`` for exact bounds, no
warm-up when 0 is given ... then the first step is timed). Reported: CPU (process) seconds -- the figure to
read on a loaded machine -- wall seconds, the ratio to onnxdual's plain step, the paper's code's step
(convex_adversarial in its own venv, ``peer_convex.py``; skipped with a message when that venv is absent)
and onnxdual / paper, each process's peak RSS, and the step's arithmetic (GFLOP of matrix products and
convolutions, torch's FLOP counter) with its ratio to the plain step's: the floor under "x plain".

    taskset -c 1 python benchmarks/scaling/bench_step.py --threads 1            # one pinned core
    taskset -c 0,1 python benchmarks/scaling/bench_step.py --threads 2
    options: --archs small,wide:1,wide:2,wide:4,wide:8 --methods plain,r10,r50,exact --exact-archs small
             --peer-python /work/peers/ca-venv/bin/python (or ONNXDUAL_PEER_PYTHON) --out FILE.md

Appends its table (markdown, with the command and the load average) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from step_timing import time_steps  # this folder (the script's own, first on sys.path)

HERE = Path(__file__).resolve().parent
DEFAULT_PEER = "/work/peers/ca-venv/bin/python"


def child(arch: str, method: str, threads: int, repeats: int) -> dict:
    """One configuration, in this (fresh) process."""
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    import onnxdual
    from onnxdual.frontend.export import export_onnx_bytes
    from onnxdual.frontend.reader import parse_model
    from onnxdual.training.architectures import build_architecture

    torch.manual_seed(0)
    module = build_architecture(arch, (1, 28, 28), num_classes=10)
    net = onnxdual.load(parse_model(export_onnx_bytes(module, (1, 28, 28)), arch))
    net.eval()
    proj = int(method[1:]) if method.startswith("r") else None

    def loss_of(x, y, gen):
        if method == "plain":
            return nn.functional.cross_entropy(net(x), y)
        return onnxdual.robust_loss(net, 0.1, x, y, proj=proj, generator=gen)[0]

    return time_steps(net, loss_of, repeats)


def run(cmd: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["failed"]
        return {"error": lines[-1][:100]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="small,wide:1,wide:2,wide:4,wide:8")
    ap.add_argument("--methods", default="plain,r10,r50,exact")
    ap.add_argument("--exact-archs", default="small", help="networks that get the (slow) exact step")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--exact-repeats", type=int, default=0)
    ap.add_argument("--peer-python", default=os.environ.get("ONNXDUAL_PEER_PYTHON", DEFAULT_PEER))
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--peer-exact", action="store_true", help="also time the paper's code's exact step")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        arch, method = args.child.rsplit("/", 1)
        print(json.dumps(child(arch, method, args.threads, args.repeats)))
        return
    peer = None if args.no_peer else args.peer_python
    if peer is not None and not Path(peer).exists():
        print(f"paper's code: skipped ({peer} not found; see peer_convex.py for the venv)", file=sys.stderr)
        peer = None
    exact_archs = set(args.exact_archs.split(",")) if args.exact_archs else set()
    load_before = os.getloadavg()
    rows = []
    for arch in args.archs.split(","):
        plain = plain_gflop = None
        for method in args.methods.split(","):
            if method == "exact" and arch not in exact_archs:
                continue
            repeats = args.exact_repeats if method == "exact" else args.repeats
            threads = str(args.threads)
            ours = run([sys.executable, __file__, "--child", f"{arch}/{method}", "--threads", threads,
                        "--repeats", str(repeats)], args.threads)
            theirs = {"note": "skipped"}
            if peer is not None and (method != "exact" or args.peer_exact):
                theirs = run([peer, str(HERE / "peer_convex.py"), arch, method, threads, str(repeats)],
                             args.threads)
            if method == "plain":
                plain, plain_gflop = ours.get("cpu_s"), ours.get("gflop")
            row = {"arch": arch, "method": method, "ours": ours, "peer": theirs, "plain": plain,
                   "plain_gflop": plain_gflop, "load": os.getloadavg()[0]}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    table = render(rows, args, load_before)
    print(table)
    if args.out is not None:
        with open(args.out, "a") as f:
            f.write(table + "\n")


def render(rows: list[dict], args, load_before) -> str:
    def num(v, fmt="{:.3f}"):
        return "-" if v is None else fmt.format(v)

    cmd = " ".join(["python", "benchmarks/scaling/bench_step.py", *sys.argv[1:]])
    out = [f"### {args.threads} thread(s), batch 50, eps 0.1 (`{cmd}`; load {load_before[0]:.2f} before)", "",
           "| net | step | onnxdual CPU s | wall s | x plain | paper CPU s | onnxdual / paper "
           "| RSS MB (ours / paper) | GFLOP (ours / paper) | FLOP x plain | load |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ours, peer = r["ours"], r["peer"]
        cpu, pcpu = ours.get("cpu_s"), peer.get("cpu_s")
        ratio = cpu / r["plain"] if cpu and r["plain"] else None
        gflop, plain_gflop = ours.get("gflop"), r.get("plain_gflop")
        flop_ratio = gflop / plain_gflop if gflop and plain_gflop else None
        vs = cpu / pcpu if cpu and pcpu else None
        pnote = num(pcpu) if pcpu is not None else peer.get("error", peer.get("note", "-"))
        out.append(f"| {r['arch']} | {r['method']} | {num(cpu) if cpu else ours.get('error')} | "
                   f"{num(ours.get('wall_s'))} | {num(ratio, '{:.1f}x')} | {pnote} | {num(vs, '{:.2f}x')} | "
                   f"{num(ours.get('peak_rss_mb'), '{:.0f}')} / {num(peer.get('peak_rss_mb'), '{:.0f}')} | "
                   f"{num(gflop, '{:.2f}')} / {num(peer.get('gflop'), '{:.2f}')} | {num(flop_ratio, '{:.1f}x')} | "
                   f"{r['load']:.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
