"""Throughput of certification (exact bounds + PGD), as `onnxdual certify` runs it, in examples per second.

On the embedded default (the shipped robust MNIST model and sample) and on the reference models with the
fixed reference inputs, next to the per-example times the paper's implementation (convex_adversarial)
needed for the exact bound alone on the same machine kind.

    python benchmarks/certify/bench_certify.py [--shared ../shared] [--limit 200]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from onnxdual.certify import CertifySettings, certify, load_stages
from onnxdual.data import load_dataset
from onnxdual_cli.certify import default_model

# convex_adversarial, exact bound, seconds per example in a batch of 16 (../shared/reference/convex_adversarial)
REFERENCE = {("mnist_small", 0.1): 0.0756, ("mnist_small", 0.01): 0.0277, ("mnist_fc_256x2", 0.1): 0.00166}


def run(stages, x, y, eps: float, clip) -> tuple[float, float, float]:
    settings = CertifySettings(eps=(eps,), clip=clip, batch_size=100, pgd_steps=40)
    t0 = time.perf_counter()
    result = certify(stages, x, y, settings)
    total = time.perf_counter() - t0
    summary = result.summary_frame().iloc[0]
    return x.shape[0] / result.seconds[eps], x.shape[0] / total, summary.certified_accuracy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2].parent / "shared")
    ap.add_argument("--limit", type=int, default=200)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| model | data | eps | bounds ex/s | certify ex/s (bounds + PGD) | certified | convex_adversarial ex/s (bound only) |")
    print("|---|---|---|---|---|---|---|")
    data = load_dataset(None, limit=args.limit)
    stages = load_stages(default_model())
    bound_rate, total_rate, cert = run(stages, data.x, data.y, 0.1, (0.0, 1.0))
    print(f"| embedded default | {data.name} ({data.x.shape[0]}) | 0.1 | {bound_rate:.1f} | {total_rate:.1f} | "
          f"{cert:.1%} | - |")
    x = torch.load(args.shared / "reference/models/inputs_1x28x28.pt")[:16]
    for (model, eps), ref in REFERENCE.items():
        stages = load_stages(args.shared / f"reference/models/{model}.onnx")
        with torch.no_grad():
            y = stages[0].net(x).argmax(1)
        bound_rate, total_rate, cert = run(stages, x, y, eps, None)
        print(f"| {model} | reference inputs (16) | {eps} | {bound_rate:.1f} | {total_rate:.1f} | {cert:.1%} | "
              f"{1 / ref:.1f} |")


if __name__ == "__main__":
    main()
