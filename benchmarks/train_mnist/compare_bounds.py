"""Which training bound gives the lowest certified error per minute of CPU on the paper's small MNIST model
(issue 14, point 3): the paper's r = 10 projections, exact (non-projected) bounds, interval bounds (IBP)
alone, an IBP warm-up before the projected bound, and CROWN-IBP's mix of the dual bound with IBP.

Every variant trains the same network from the same seed on the same subset of the MNIST training set with
the same short schedule (``onnxdual.training.train``, in this process, one thread: pin it with taskset),
then is certified with exact bounds on the first test images (the paper's relaxation, as Table 2; and
CROWN's adaptive faces). Training CPU time is ``time.process_time()`` around ``train`` (no start-up, no
certification). Prints a markdown table (and writes it with ``--out``):

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/train_mnist/compare_bounds.py \
        --data ../shared/data/mnist --limit 10000 --epochs 2 --ramp-epochs 1 --eval-limit 500 \
        --out benchmarks/train_mnist/results/compare_bounds.md

``--variants`` picks a subset (names as in the table). The robust error of a training *estimate* is never
reported here: every certified figure comes from exact bounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from onnxdual.certify import CertifySettings, certify, load_stages
from onnxdual.data import load_dataset
from onnxdual.training import ArrayData, TrainConfig, train

#: name -> (TrainConfig settings beyond the common ones, what it is)
VARIANTS = {
    "paper r=10": (dict(proj=10), "Wong et al. 2018: r = 10 random projections (Alg. 1)"),
    "exact": (dict(proj=None), "exact dual bound (no projections)"),
    "ibp": (dict(interval_weight=(1.0, 1.0)), "interval bounds alone (IBP, Gowal et al. 2018)"),
    "ibp warm-up + r=10": (dict(proj=10, ibp_warmup=1),
                           "first epoch on IBP alone, then r = 10 (--ibp-warmup 1)"),
    "crown-ibp mix r=10": (dict(proj=10, interval_weight=(0.0, 1.0)),
                           "(1-w) J_r=10 + w J_IBP, w 0 -> 1 over the ramp (--ibp-weight 0,1)"),
    "half mix r=10": (dict(proj=10, interval_weight=(0.5, 0.5)),
                      "0.5 J_r=10 + 0.5 J_IBP throughout (--ibp-weight 0.5)"),
}


def certified_error(model: Path, test, eps: float, relaxation: str,
                    pgd_steps: int) -> tuple[float, float, float]:
    """Clean, certified (exact bounds) and PGD error of ``model`` on ``test``."""
    settings = CertifySettings(eps=(eps,), clip=(0.0, 1.0), batch_size=100, pgd_steps=pgd_steps,
                               relaxation=relaxation)
    summary = certify(load_stages(model), test.x, test.y, settings).summary
    row = summary[summary.stage == "all"].iloc[0]
    return 1 - row.clean_accuracy, 1 - row.certified_accuracy, 1 - row.pgd_accuracy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="MNIST directory")
    ap.add_argument("--limit", type=int, default=10_000, help="training examples (the first N)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--ramp-epochs", type=int, default=1)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--eval-limit", type=int, default=500, help="test images certified")
    ap.add_argument("--pgd-steps", type=int, default=10)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    torch.set_num_threads(1)
    train_set = load_dataset(args.data, split="train", limit=args.limit)
    test_set = load_dataset(args.data, split="test", limit=args.eval_limit)
    lines = [f"Small MNIST model (App. G), eps {args.eps:g}, {args.limit} training images, {args.epochs} "
             f"epoch(s), eps ramp 0.01 -> {args.eps:g} over {args.ramp_epochs} epoch(s), Adam lr 1e-3, batch 50, "
             f"seed 0; certified on the first {args.eval_limit} test images with exact bounds; PGD "
             f"{args.pgd_steps} steps. One thread, torch {torch.__version__}, {platform.processor() or 'cpu'}; "
             f"load before: {os.getloadavg()[0]:.2f}.", "",
             "| variant | what | train CPU min | clean err | certified err (paper relax.) | "
             "certified err (adaptive) | PGD err | load |",
             "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        # one throwaway step first: the first run of a process pays one-off imports and caches
        warm = ArrayData(train_set.x[:50], train_set.y[:50], train_set.name, train_set.num_classes)
        train("small", warm, TrainConfig(eps=args.eps, epochs=1, device="cpu", proj=10), Path(tmp) / "warm")
        for name in names:
            settings, what = VARIANTS[name]
            config = TrainConfig(eps=args.eps, epochs=args.epochs, ramp_epochs=args.ramp_epochs, seed=0,
                                 device="cpu", **settings)
            t0 = time.process_time()
            run = train("small", train_set, config, Path(tmp) / name.replace(" ", "_").replace("=", ""))
            minutes = (time.process_time() - t0) / 60
            clean, cert, pgd = certified_error(run.model_path, test_set, args.eps, "paper", args.pgd_steps)
            _, cert_adaptive, _ = certified_error(run.model_path, test_set, args.eps, "adaptive", 0)
            row = (f"| {name} | {what} | {minutes:.2f} | {clean:.1%} | {cert:.1%} | {cert_adaptive:.1%} | "
                   f"{pgd:.1%} | {os.getloadavg()[0]:.2f} |")
            lines.append(row)
            print(row, flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
