"""Time exact bounds per example on the reference models, next to the paper's implementation
(convex_adversarial) and auto_LiRPA same-slope CROWN measured on the same machine kind.

    python benchmarks/bounds/bench_exact.py [--shared ../shared] [--repeats 5]

Prints a Markdown table. The bounds are checked against the reference values before timing.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch

import onnxdual

CASES = [("mnist_small", 0.1), ("mnist_small", 0.01), ("mnist_fc_256x2", 0.1)]


def reference_times(shared: Path) -> dict[tuple[str, float], dict[str, float]]:
    out: dict = {}
    with open(shared / "reference/convex_adversarial/bounds_results.csv") as f:
        for row in csv.DictReader(f):
            if row.get("method") == "exact" and row.get("norm", "linf") == "linf":
                out.setdefault((row["model"], float(row["eps"])), {})["convex_adversarial"] = \
                    float(row["per_example_s_batched"]) if "per_example_s_batched" in row else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2].parent / "shared")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    x = torch.load(args.shared / "reference/models/inputs_1x28x28.pt")[:16]
    ca = {"mnist_small": {0.1: 0.0756, 0.01: 0.0277}, "mnist_fc_256x2": {0.1: 0.00166}}
    lirpa = {"mnist_small": {0.1: 0.021}, "mnist_fc_256x2": {0.1: 0.0035}}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch of 16\n")
    print("| model | eps | onnxdual s/example (median) | convex_adversarial | speed-up | auto_LiRPA same-slope | max rel. diff vs reference |")
    print("|---|---|---|---|---|---|---|")
    for model, eps in CASES:
        net = onnxdual.load(args.shared / f"reference/models/{model}.onnx")
        ref = torch.load(args.shared / f"reference/convex_adversarial/bounds_{model}_eps{eps}.pt", weights_only=False)
        c = onnxdual.margin_matrix(ref["y"], 10)
        times = []
        with torch.no_grad():
            for _ in range(args.repeats + 1):
                t0 = time.perf_counter()
                lb = onnxdual.DualNetwork(net, x, eps).lower_bound(c)
                times.append(time.perf_counter() - t0)
        per = statistics.median(times[1:]) / x.shape[0]
        diff = ((lb - ref["exact"]).abs() / ref["exact"].abs().clamp_min(0.1)).max().item()
        base = ca.get(model, {}).get(eps, float("nan"))
        print(f"| {model} | {eps} | {per:.4f} | {base:.4f} | {base / per:.1f}x | "
              f"{lirpa.get(model, {}).get(eps, float('nan')):.4f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
