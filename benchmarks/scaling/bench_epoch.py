"""One robust training epoch of the paper's networks, timed, against the paper's Table 1 (time per epoch,
GTX 1080 Ti) and Fig. 7 (seconds per hidden unit of the projected bound, Titan X): hidden units per second
(issue 14, point 4). Ready for the first CUDA machine; runs on the CPU too:

    python benchmarks/scaling/bench_epoch.py --device cuda                       # full epochs, all six rows
    python benchmarks/scaling/bench_epoch.py --device cpu --limit-steps 20 --archs small --datasets mnist

Each row trains a built-in architecture (``small``, ``large``, ``resnet``; App. G) with ``onnxdual``'s own
training loop (:func:`onnxdual.training.train`, the code ``onnxdual train`` runs) for one epoch of the data
set's size at batch 50 and r = 50 projections (§4: "50 random projections except where noted"; Table 1
does not state its r), eps at its final value (0.1 MNIST, 2/255 CIFAR-10). ``--limit-steps N`` times N steps
and extrapolates to the epoch (60,000 / 50 = 1,200 steps on MNIST, 50,000 / 50 = 1,000 on CIFAR-10); the
first step (lazy initialisation, kernel selection) is left out of the per-step time. Inputs are the real
training set when ``--mnist``/``--cifar`` point to it, else uniform random images of the right shape
(the cost of a step does not depend on the pixel values; the table says which).

Columns: hidden units and parameters of our build next to Table 1's (they should match); seconds per step
(wall; on the CPU also CPU seconds); the epoch's seconds and Table 1's; hidden units x examples per second
(``hidden * batch / seconds per step``) and the same figure from Table 1 (``hidden * N / epoch seconds``);
peak memory (CUDA: ``max_memory_allocated``; CPU: the process's maximum RSS). Writes the table with
``--out`` (markdown).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from onnxdual.data import load_dataset
from onnxdual.distributed import resolve_device
from onnxdual.engine.network import DualNetwork
from onnxdual.errors import InvalidInputError
from onnxdual.frontend.export import as_network
from onnxdual.training import ArrayData, TrainCallback, TrainConfig, build_architecture, train

#: Table 1 of the paper: (architecture, data set) -> (hidden units, parameters, seconds per epoch)
TABLE1 = {("small", "mnist"): (4804, 166406, 74), ("small", "cifar"): (6244, 214918, 48),
          ("large", "mnist"): (28064, 1974762, 667), ("large", "cifar"): (62464, 2466858, 466),
          ("resnet", "mnist"): (82536, 3254562, 2174), ("resnet", "cifar"): (107496, 4214850, 1685)}
#: Fig. 7 / App. E.6: the projected bound of 10 examples through one 3x3 conv layer costs 2.26e-7 s per
#: hidden unit (Titan X), i.e. this many hidden units x examples per second (a bound, not a training step)
FIG7_UNIT_EXAMPLES_PER_SECOND = 10 / 2.26e-7
#: per data set: input shape, training-set size, final eps (App. G)
DATASETS = {"mnist": ((1, 28, 28), 60_000, 0.1), "cifar": ((3, 32, 32), 50_000, 2 / 255)}


class _Clock(TrainCallback):
    """Wall and CPU time from the end of the first step to the end of the last (each end synchronised)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.marks: list[tuple[float, float]] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self._sync()
        self.marks = [(time.perf_counter(), time.process_time())]

    def on_step(self, i: int, n: int, metrics) -> None:
        self._sync()
        self.marks.append((time.perf_counter(), time.process_time()))

    def per_step(self) -> tuple[float, float, float]:
        """Seconds per step (wall, CPU) after the first step, and the first step's wall seconds."""
        first = self.marks[1][0] - self.marks[0][0]
        if len(self.marks) < 3:
            return first, self.marks[1][1] - self.marks[0][1], first
        (w0, c0), (w1, c1) = self.marks[1], self.marks[-1]
        steps = len(self.marks) - 2
        return (w1 - w0) / steps, (c1 - c0) / steps, first


def hidden_units(arch: str, shape: tuple[int, int, int]) -> tuple[int, int]:
    """Units at the inputs of the activations (the paper's "hidden units") and parameters of the build."""
    module = build_architecture(arch, shape)
    x = torch.zeros(1, *shape)
    net = as_network(module, x)
    from onnxdual.duals.base import ActivationDual

    built = DualNetwork(net, x, 0.1).built
    units = sum(math.prod(s.input_shapes[0]) for s in built.steps if isinstance(s.layer, ActivationDual))
    return units, sum(p.numel() for p in module.parameters())


def data_for(dataset: str, path: Path | None, n: int) -> tuple[ArrayData, str]:
    shape, _, _ = DATASETS[dataset]
    if path is not None:
        data = load_dataset(path, split="train", limit=n)
        return ArrayData(data.x, data.y, data.name, 10), "real"
    g = torch.Generator().manual_seed(0)
    return (ArrayData(torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g),
                      "cifar10" if dataset == "cifar" else "mnist", 10), "random")


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def one_row(arch: str, dataset: str, device: torch.device, args: argparse.Namespace) -> dict:
    shape, n_train, eps = DATASETS[dataset]
    full_steps = n_train // args.batch_size
    steps = full_steps if args.limit_steps is None else min(args.limit_steps, full_steps)
    data, kind = data_for(dataset, getattr(args, dataset), steps * args.batch_size)
    units, params = hidden_units(arch, shape)
    config = TrainConfig(eps=eps, proj=args.projections, epochs=1, batch_size=args.batch_size, ramp_epochs=0,
                         seed=0, device=str(device))
    clock = _Clock(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        train(arch, data, config, tmp, callbacks=[clock])
    wall, cpu, first = clock.per_step()
    epoch = wall * full_steps
    paper_units, paper_params, paper_epoch = TABLE1[(arch, dataset)]
    return {"arch": arch, "dataset": dataset, "data": kind, "device": str(device), "r": args.projections,
            "units": units, "paper_units": paper_units, "params": params, "paper_params": paper_params,
            "steps": steps, "full_steps": full_steps, "wall": wall, "cpu": cpu, "first": first, "epoch": epoch,
            "paper_epoch": paper_epoch, "rate": units * args.batch_size / wall,
            "paper_rate": paper_units * n_train / paper_epoch, "peak_mib": peak_mib(device)}


def table(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| model | data | device | r | hidden units (Table 1) | parameters (Table 1) | steps timed | "
             "s/step wall (CPU) | epoch s | Table 1 s/epoch | epoch / Table 1 | hidden-unit examples/s "
             "| Table 1's | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        extrapolated = "" if r["steps"] == r["full_steps"] else f" (from {r['steps']} steps)"
        lines.append(
            f"| {r['arch']} | {r['dataset']} ({r['data']}) | {r['device']} | {r['r']} | {r['units']} "
            f"({r['paper_units']}) | {r['params']} ({r['paper_params']}) | {r['steps']} of {r['full_steps']} | "
            f"{r['wall']:.4f} ({r['cpu']:.4f}) | {r['epoch']:.0f}{extrapolated} | {r['paper_epoch']} | "
            f"{r['epoch'] / r['paper_epoch']:.2f}x | {r['rate']:.3g} | {r['paper_rate']:.3g} | "
            f"{r['peak_mib']:.0f} |")
    lines += ["", f"Fig. 7 (one 3x3 conv layer, projected bound of 10 examples, Titan X): "
                  f"{FIG7_UNIT_EXAMPLES_PER_SECOND:.3g} hidden-unit examples/s for the bound alone."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present)")
    ap.add_argument("--archs", default="small,large,resnet")
    ap.add_argument("--datasets", default="mnist,cifar")
    ap.add_argument("--projections", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--limit-steps", type=int, default=None,
                    help="time this many steps and extrapolate to the epoch [default: the whole epoch]")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch [default: torch's]")
    ap.add_argument("--mnist", type=Path, default=None, help="MNIST directory [default: random images]")
    ap.add_argument("--cifar", type=Path, default=None, help="CIFAR-10 directory [default: random images]")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except InvalidInputError as exc:
        print(f"bench_epoch: error: {exc}", file=sys.stderr)
        return 2
    if args.limit_steps is not None and args.limit_steps < 1:
        ap.error("--limit-steps must be positive")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    bad = [(a, d) for a in archs for d in datasets if (a, d) not in TABLE1]
    if bad:
        ap.error(f"no Table 1 row for {bad}; archs: small, large, resnet; datasets: mnist, cifar")
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} thread(s)")
    header = (f"One robust training epoch (batch {args.batch_size}, r = {args.projections}), {where}, torch "
              f"{torch.__version__}, load before {os.getloadavg()[0]:.2f}; Table 1: GTX 1080 Ti.")
    print(header, flush=True)
    rows = []
    for dataset in datasets:
        for arch in archs:
            rows.append(one_row(arch, dataset, device, args))
            r = rows[-1]
            print(f"  {arch} {dataset}: {r['wall']:.4f} s/step, epoch {r['epoch']:.0f} s (Table 1: "
                  f"{r['paper_epoch']} s)", flush=True)
    text = table(rows, header)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
