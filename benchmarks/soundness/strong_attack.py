"""Soundness of certify under a strong attack: the shipped robust MNIST model on the shipped sample, every
example certified (exact bounds) and attacked with a targeted PGD of many steps and restarts. A certified
example that the attack breaks, or an attack that goes below a certified margin's lower bound, would be a
soundness bug; the table says how many there are (it must be 0) and how close the attack came.

    python benchmarks/soundness/strong_attack.py [--limit 200] [--eps 0.05,0.1] [--steps 200] [--restarts 10]
                                                 [--seed N] [--device cpu]

The seed is fresh each run (printed) unless given, so repeated runs keep trying new attack starts.
"""

from __future__ import annotations

import argparse
import secrets
import time

import torch

from onnxdual.certify import CertifySettings, certify, load_stages
from onnxdual.data import load_dataset
from onnxdual_cli.certify import default_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--eps", default="0.05,0.1")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(2 ** 31)
    eps = tuple(float(e) for e in args.eps.split(","))
    device = torch.device(args.device)
    stages = load_stages(default_model())
    for stage in stages:
        stage.net.to(device)
    data = load_dataset(None, limit=args.limit)
    settings = CertifySettings(eps=eps, clip=(0.0, 1.0), batch_size=100, pgd_steps=args.steps,
                               pgd_restarts=args.restarts, seed=seed)
    t0 = time.perf_counter()
    result = certify(stages, data.x.to(device), data.y.to(device), settings)
    seconds = time.perf_counter() - t0
    examples = result.examples_frame()
    print(f"model {stages[0].path.name}, {data.x.shape[0]} examples, PGD {args.steps} steps x "
          f"{args.restarts} restarts, seed {seed} (replay with --seed {seed}), {seconds:.1f} s\n")
    print("| eps | n | clean | certified | PGD accuracy | certified but broken | bound above attack "
          "| least slack (attack - bound) |")
    print("|---|---|---|---|---|---|---|---|")
    unsound = 0
    for e in eps:
        ex = examples[examples.eps == e]
        cert = ex[ex.certified]
        broken = int((cert.pgd_success).sum())
        above = int(sum(r["soundness_violation"] for r in result.stage_records if r["eps"] == e))
        slack = (cert.pgd_margin - cert.margin_lower_bound).min() if len(cert) else float("nan")
        unsound += broken + above
        print(f"| {e:g} | {len(ex)} | {(ex.prediction == ex.label).mean():.1%} | {ex.certified.mean():.1%} | "
              f"{1 - ex.pgd_success.mean():.1%} | {broken} | {above} | {slack:.4g} |")
    print(f"\nsoundness violations: {unsound}")
    return 1 if unsound else 0


if __name__ == "__main__":
    raise SystemExit(main())
