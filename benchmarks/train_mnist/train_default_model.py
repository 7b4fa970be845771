"""Train the embedded default model: the paper's small MNIST network, robust at l-inf eps = 0.1.

Robust training with random projections (r = 10, Alg. 1), Adam 1e-3, batch 50, eps ramped linearly from
0.01 to 0.1 (App. G.1, shortened to what a CPU session allows). Writes an ONNX file after every epoch.

    python benchmarks/train_mnist/train_default_model.py --data ../shared/data/mnist --epochs 14 \
        --out benchmarks/train_mnist/out
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import onnxdual


def idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    n = int.from_bytes(raw[4:8], "big")
    if int.from_bytes(raw[0:4], "big") == 2051:
        return np.frombuffer(raw, np.uint8, offset=16).reshape(n, 1, 28, 28)
    return np.frombuffer(raw, np.uint8, offset=8)


def small() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


def export(seq: nn.Sequential, trained: nn.Module, path: Path) -> None:
    with torch.no_grad():
        for p_seq, p_tr in zip(seq.parameters(), trained.parameters()):
            p_seq.copy_(p_tr)
    tmp = path.with_suffix(".tmp")
    torch.onnx.export(seq, torch.zeros(1, 1, 28, 28), str(tmp), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--ramp", type=int, default=6)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--proj", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    x = torch.from_numpy(idx(args.data / "train-images-idx3-ubyte.gz").astype(np.float32) / 255)
    y = torch.from_numpy(idx(args.data / "train-labels-idx1-ubyte.gz").astype(np.int64))
    seq = small()
    init = args.out / "init.onnx"
    export(seq, seq, init)
    net = onnxdual.load(init)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = x.shape[0] // 50
    with open(args.out / "train_log.csv", "w", newline="") as f:
        log = csv.writer(f)
        log.writerow(["epoch", "eps", "lr", "robust_loss", "robust_err_estimate", "clean_err", "seconds"])
        for epoch in range(args.epochs):
            if epoch >= args.ramp + 2 and (epoch - args.ramp) % 3 == 0:
                for g in opt.param_groups:
                    g["lr"] *= 0.5
            perm = torch.randperm(x.shape[0], generator=gen)
            start, totals = time.time(), np.zeros(3)
            for step in range(steps_per_epoch):
                frac = min(1.0, (epoch * steps_per_epoch + step) / max(1, args.ramp * steps_per_epoch))
                eps = 0.01 + (args.eps - 0.01) * frac
                idx_b = perm[step * 50:(step + 1) * 50]
                xb, yb = x[idx_b], y[idx_b]
                loss, err = onnxdual.robust_loss(net, eps, xb, yb, proj=args.proj, clip=(0.0, 1.0), generator=gen)
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    clean = (net(xb).argmax(1) != yb).float().mean()
                totals += [loss.item(), err.item(), clean.item()]
            totals /= steps_per_epoch
            log.writerow([epoch, round(eps, 4), opt.param_groups[0]["lr"], *np.round(totals, 4),
                          round(time.time() - start, 1)])
            f.flush()
            export(seq, net, args.out / f"epoch{epoch:02d}.onnx")


if __name__ == "__main__":
    main()
