"""Peer runner: times one training step of the paper's code (convex_adversarial 0.4.4, Wong et al.'s release)
for bench_step.py, in its own venv, so that onnxdual's venv stays clean. It never imports onnxdual.

Creating the peer venv (the exact commands used; torch 2.13 CPU):

    python3 -m venv /work/peers/ca-venv
    /work/peers/ca-venv/bin/pip install torch==2.13.0 convex-adversarial==0.4.4 numpy

(convex_adversarial needs numpy, which its package metadata does not list; no other shim was needed for
torch 2.13.) Run by bench_step.py as

    /work/peers/ca-venv/bin/python benchmarks/scaling/peer_convex.py ARCH METHOD THREADS REPEATS

and prints one JSON line: the median CPU (process) and wall seconds of REPEATS steps after one warm-up, and
the peak RSS. ARCH is ``small`` or ``wide:K`` (the paper's networks, built as ``nn.Sequential`` in the
layer order of onnxdual's ``build_architecture``, seeded with ``torch.manual_seed(0)`` as the onnxdual side,
so both start from the same weights); METHOD is ``plain``, ``rN`` (``proj=N``, ``norm_type='l1_median'``:
the median estimator) or ``exact``. The step is the paper's training step: ``robust_loss`` on a batch of 50
random 28x28 images, eps 0.1, then backward and an Adam step.
"""
import json
import sys

import torch
from step_timing import time_steps  # this folder (torch only, no onnxdual)
from torch import nn


def build(arch):
    k = 4 if arch == "small" else int(arch.split(":")[1])  # small: down 16, down 32, dense 100
    c1, c2, dense = (16, 32, 100) if arch == "small" else (4 * k, 8 * k, 128 * k)
    return nn.Sequential(nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(c2 * 7 * 7, dense), nn.ReLU(), nn.Linear(dense, 10))


def main():
    arch, method, threads, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    from convex_adversarial import robust_loss

    torch.manual_seed(0)
    net = build(arch)
    proj = int(method[1:]) if method.startswith("r") else None

    def loss_of(x, y, _gen):
        if method == "plain":
            return nn.functional.cross_entropy(net(x), y)
        if proj is not None:
            return robust_loss(net, 0.1, x, y, proj=proj, norm_type="l1_median")[0]
        return robust_loss(net, 0.1, x, y)[0]

    print(json.dumps(time_steps(net, loss_of, repeats)))

if __name__ == "__main__":
    main()
