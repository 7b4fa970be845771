"""High-probability bounds (App. E) next to exact ones: time per example, how much looser the margins are,
and how many of the estimates the failure probability is split over.

    python benchmarks/bounds/bench_probable.py [--shared ../shared] [--batch 4] [--models mnist_small,...]

Prints a Markdown table. Uses the reference models (random weights) and inputs of ``../shared/reference``;
margins are the lower bounds of ``f_y - f_j`` (``y`` the model's prediction) over the l-inf ball, no clipping.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import onnxdual

SETTINGS = [(200, 10), (50, 4)]  # (k, m): the paper's example, and a cheaper one


def _margins(values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    values = values.clone()
    values[torch.arange(y.shape[0]), y] = float("inf")
    return values.min(1).values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2].parent / "shared")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--delta", type=float, default=0.01)
    ap.add_argument("--models", default="mnist_small:0.01,mnist_fc_256x6:0.01,mnist_large:0.002")
    ap.add_argument("--skip-exact", default="", help="models whose exact bound is too slow here")
    args = ap.parse_args()
    torch.manual_seed(0)
    inputs = {1: torch.load(args.shared / "reference/models/inputs_1x28x28.pt"),
              3: torch.load(args.shared / "reference/models/inputs_3x32x32.pt")}
    print(f"| model | eps | bound | k x m | N estimates | s / example | mean margin | margin gap to exact |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.models.split(","):
        name, eps = spec.split(":")
        eps = float(eps)
        net = onnxdual.load(args.shared / f"reference/models/{name}.onnx")
        channels = 3 if name.startswith("cifar") else 1
        x = inputs[channels][: args.batch]
        with torch.no_grad():
            y = net(x).argmax(1)
            c = onnxdual.margin_matrix(y, 10)
            exact = None
            if name not in args.skip_exact.split(","):
                t0 = time.perf_counter()
                exact = _margins(onnxdual.DualNetwork(net, x, eps).lower_bound(c), y)
                seconds = (time.perf_counter() - t0) / x.shape[0]
                print(f"| {name} | {eps} | exact | - | 0 | {seconds:.3f} | {exact.mean():.4f} | 0 |")
            for k, m in SETTINGS:
                dual = onnxdual.DualNetwork(net, x, eps, generator=torch.Generator().manual_seed(0))
                t0 = time.perf_counter()
                result = dual.probable_lower_bound(c, args.delta, k, m)
                seconds = (time.perf_counter() - t0) / x.shape[0]
                margin = _margins(result.value, y)
                gap = f"{(exact - margin).mean():.4f}" if exact is not None else "n/a"
                print(f"| {name} | {eps} | probable (delta={args.delta}) | {k} x {m} | {result.estimates} | "
                      f"{seconds:.3f} | {margin.mean():.4f} | {gap} |", flush=True)


if __name__ == "__main__":
    main()
