"""Scaling of one robust training step with the number of hidden units (paper §3.2, Fig. 7, App. G).

For the Wide(k) family on 28x28x1 inputs (k = 1, 2, 4, 8, 16; App. G) and batch 50, eps 0.1 (l-inf):
wall time and peak memory (max RSS of a fresh process) of one step for a plain cross-entropy step, random
projections r = 10 and r = 50, and exact bounds; plus the relative error of the projected estimate of the
robust objective against the exact one for r = 10, 50, 100 (the paper's Fig. 6).

    python benchmarks/scaling/bench_scaling.py --out benchmarks/scaling/results [--ks 1,2,4,8,16]

Writes scaling.csv, estimate_error.csv and scaling.png, and prints both tables.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import onnxdual


def wide(k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4 * k, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(4 * k, 8 * k, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * k * 7 * 7, 128 * k), nn.ReLU(), nn.Linear(128 * k, 10))


def hidden_units(k: int) -> int:
    return 4 * k * 14 * 14 + 8 * k * 7 * 7 + 128 * k


def load_wide(k: int, tmp: Path) -> nn.Module:
    torch.manual_seed(k)
    path = tmp / f"wide{k}.onnx"
    torch.onnx.export(wide(k), torch.zeros(1, 1, 28, 28), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}})
    return onnxdual.load(path)


def one_config(k: int, method: str, repeats: int) -> dict:
    """Run in a fresh process: time `repeats` steps after a warm-up, report the median and max RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        net = load_wide(k, Path(tmp))
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(50, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (50,), generator=gen)
    proj = {"r10": 10, "r50": 50}.get(method)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        if method == "plain":
            loss = nn.functional.cross_entropy(net(x), y)
        else:
            loss, _ = onnxdual.robust_loss(net, 0.1, x, y, proj=proj, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"k": k, "hidden_units": hidden_units(k), "method": method, "seconds": times[len(times) // 2],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def estimate_errors(ks: list[int], tmp: Path) -> list[dict]:
    rows = []
    for k in ks:
        net = load_wide(k, tmp)
        gen = torch.Generator().manual_seed(1)
        x = torch.rand(20, 1, 28, 28, generator=gen)
        with torch.no_grad():
            c = onnxdual.margin_matrix(net(x).argmax(1), 10)
            exact = onnxdual.DualNetwork(net, x, 0.1).lower_bound(c)
            mask = c.abs().sum(-1) > 0
            for r in (10, 50, 100):
                rel = []
                for seed in range(5):
                    est = onnxdual.DualNetwork(net, x, 0.1, proj=r,
                                               generator=torch.Generator().manual_seed(seed)).estimate(c).value
                    rel.append(((est - exact).abs() / exact.abs().clamp_min(1e-6))[mask])
                rel = torch.cat(rel)
                rows.append({"k": k, "proj": r, "median_rel_error": rel.median().item(),
                             "p90_rel_error": rel.quantile(0.9).item(),
                             "frac_above_exact": None})
    return rows


def report(out: Path) -> None:
    """Print both tables and draw scaling.png from the CSV files in ``out``."""
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.read_csv(out / "scaling.csv")
    plain = table[table.method == "plain"].set_index("k").seconds
    table["x_plain"] = table.apply(lambda r: r.seconds / plain.get(r.k, float("nan")), axis=1)
    print(table.to_string(index=False))
    print()
    print(pd.read_csv(out / "estimate_error.csv").to_string(index=False))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, group in table.dropna(subset=["seconds"]).groupby("method"):
        axes[0].plot(group.hidden_units, group.seconds, marker="o", label=method)
        axes[1].plot(group.hidden_units, group.peak_rss_mb, marker="o", label=method)
    axes[0].set(xlabel="hidden units", ylabel="seconds per step (batch 50)", xscale="log", yscale="log")
    axes[1].set(xlabel="hidden units", ylabel="peak RSS (MB)", xscale="log", yscale="log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--ks", default="1,2,4,8,16")
    ap.add_argument("--exact-max-k", type=int, default=4, help="largest k for the exact step (time/memory)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--report-only", action="store_true", help="re-print and re-plot existing CSV files")
    args = ap.parse_args()
    if args.report_only:
        report(args.out)
        return
    if args.child:
        k, method = args.child.split(":")
        print(json.dumps(one_config(int(k), method, args.repeats)))
        return
    import pandas as pd

    args.out.mkdir(parents=True, exist_ok=True)
    ks = [int(k) for k in args.ks.split(",")]
    rows = []
    for k in ks:
        for method in ("plain", "r10", "r50", "exact"):
            if method == "exact" and k > args.exact_max_k:
                rows.append({"k": k, "hidden_units": hidden_units(k), "method": method, "seconds": None,
                             "peak_rss_mb": None, "note": f"skipped (k > {args.exact_max_k})"})
                continue
            proc = subprocess.run([sys.executable, __file__, "--child", f"{k}:{method}", "--repeats",
                                   str(args.repeats)], capture_output=True, text=True, timeout=3600,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if proc.returncode != 0:
                rows.append({"k": k, "hidden_units": hidden_units(k), "method": method, "seconds": None,
                             "peak_rss_mb": None, "note": proc.stderr.strip().splitlines()[-1][:120]})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "scaling.csv", index=False)
    with tempfile.TemporaryDirectory() as tmp:
        errors = pd.DataFrame(estimate_errors([k for k in ks if k <= args.exact_max_k], Path(tmp)))
    errors.drop(columns=["frac_above_exact"]).to_csv(args.out / "estimate_error.csv", index=False)
    report(args.out)


if __name__ == "__main__":
    main()
