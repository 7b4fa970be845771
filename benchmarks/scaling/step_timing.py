"""The timed training step shared by bench_step.py (onnxdual) and peer_convex.py (the paper's code, in its own
venv): the same batch (50 random 28x28 images and labels from a seeded generator), an Adam step on
``loss_of(x, y)``, and the median CPU and wall seconds of ``repeats`` steps after one warm-up, then one more
step under torch's FLOP counter (matrix products and convolutions, forward and backward: the arithmetic a
step cannot avoid, which no amount of tuning removes). Imports torch only, never onnxdual, so both sides can
use it."""

import resource
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def time_steps(net: torch.nn.Module, loss_of, repeats: int) -> dict:
    """One warm-up then ``repeats`` steps (``repeats == 0``: the single step is timed); the peak RSS too."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(50, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (50,), generator=gen)
    cpu, wall = [], []
    for i in range(repeats + 1):
        t0, w0 = time.process_time(), time.perf_counter()
        opt.zero_grad()
        loss_of(x, y, gen).backward()
        opt.step()
        if i or repeats == 0:
            cpu.append(time.process_time() - t0)
            wall.append(time.perf_counter() - w0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counter = FlopCounterMode(display=False)
    with counter:
        opt.zero_grad()
        loss_of(x, y, gen).backward()
        opt.step()
    return {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall), "peak_rss_mb": peak,
            "gflop": counter.get_total_flops() / 1e9}
