"""GPU smoke test: certification, one training epoch and one VNN-COMP instance on CUDA, each with its
throughput and peak GPU memory, and the same certification on the CPU for comparison. Run it the first time a
CUDA device is available (it prints one SKIP line and exits 0 without one):

    python benchmarks/gpu/smoke.py [--limit 500] [--batch-size 100] [--train-examples 1000] [--no-cpu]

Every part checks what it can check: the CUDA bounds equal the CPU bounds (to 1e-4) and lie below the PGD
margins, the training loss is finite, the instance gets the CPU's answer. The tests of the same paths are
tests/certify/test_cuda.py (they skip without CUDA).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from onnxdual import bench
from onnxdual.certify import CertifySettings, certify, load_stages
from onnxdual.data import load_dataset
from onnxdual_cli.certify import default_model

REPO = Path(__file__).resolve().parents[2]


def peak_mib() -> float:
    return torch.cuda.max_memory_allocated() / 2**20


def certify_on(device: str, limit: int, batch_size: int):
    data = load_dataset(None, limit=limit)
    stages = load_stages(default_model())
    for stage in stages:
        stage.net.to(device)
    settings = CertifySettings(eps=(0.1,), clip=(0.0, 1.0), batch_size=batch_size, relaxation="adaptive")
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = certify(stages, data.x.to(device), data.y.to(device), settings)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return result.examples_frame(), data.x.shape[0] / seconds, seconds


def train_epoch(examples: int) -> tuple[float, float, float]:
    from onnxdual.training import ArrayData, TrainConfig, train

    data = load_dataset(None, limit=examples)
    config = TrainConfig(eps=0.1, proj=50, epochs=1, batch_size=50, ramp_epochs=1, device="cuda")
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        run = train("small", ArrayData(data.x, data.y, data.name, 10), config, Path(out) / "run")
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    loss = float(run.history[-1]["robust_loss"])
    return data.x.shape[0] / seconds, seconds, loss


def vnncomp_instance() -> tuple[str, str, float]:
    instances = [i for i in bench.read_instances(REPO / "benchmarks" / "vnnlib") if "conv" in i.onnx][:1]
    cpu = bench.run_benchmark(instances, device=torch.device("cpu")).answer.iloc[0]
    torch.cuda.reset_peak_memory_stats()
    row = bench.run_benchmark(instances, device=torch.device("cuda")).iloc[0]
    return row.answer, cpu, float(row.seconds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=500, help="examples to certify (the shipped sample)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--train-examples", type=int, default=1000)
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU run of the same certification")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device here (torch.cuda.is_available() is False)")
        return 0
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}, "
          f"{torch.cuda.device_count()} device(s)")
    failures = []

    gpu, rate, seconds = certify_on("cuda", args.limit, args.batch_size)
    print(f"certify (default model, eps 0.1, adaptive, batch {args.batch_size}): {rate:.1f} examples/s "
          f"({len(gpu)} in {seconds:.1f} s), peak GPU memory {peak_mib():.0f} MiB, "
          f"certified {gpu.certified.mean():.1%}")
    if not (gpu.margin_lower_bound <= gpu.pgd_margin + 1e-4).all():
        failures.append("a CUDA bound lies above its PGD margin")
    if not args.no_cpu:
        cpu, cpu_rate, _ = certify_on("cpu", args.limit, args.batch_size)
        gap = float((gpu.margin_lower_bound - cpu.margin_lower_bound).abs().max())
        print(f"certify on the CPU ({torch.get_num_threads()} threads): {cpu_rate:.1f} examples/s; "
              f"largest bound difference CUDA vs CPU {gap:.2e}")
        if gap > 1e-4 * (1 + float(cpu.margin_lower_bound.abs().max())):
            failures.append(f"CUDA bounds differ from the CPU's by {gap:.2e}")

    rate, seconds, loss = train_epoch(args.train_examples)
    print(f"train (small, projections 50, one epoch of {args.train_examples}): {rate:.1f} examples/s "
          f"({seconds:.1f} s), robust loss {loss:.3f}, peak GPU memory {peak_mib():.0f} MiB")
    if not loss == loss or loss in (float("inf"), float("-inf")):
        failures.append("training loss is not finite")

    answer, cpu_answer, seconds = vnncomp_instance()
    print(f"VNN-COMP instance (benchmarks/vnnlib conv): {answer} in {seconds:.2f} s (CPU: {cpu_answer}), "
          f"peak GPU memory {peak_mib():.0f} MiB")
    if answer != cpu_answer:
        failures.append(f"the instance's CUDA answer {answer} differs from the CPU's {cpu_answer}")

    for f in failures:
        print(f"FAIL: {f}")
    print("OK" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
