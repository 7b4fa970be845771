"""Print a training run's per-epoch metrics (``metrics.csv`` of ``onnxdual train``; for a cascade, each
stage's) as a markdown table, with the total training time.

    python benchmarks/train_mnist/run_table.py runs/cascade

The robust error column is the *projected estimate* on the training batches of that epoch (Alg. 1; the
eps of that epoch), and the clean error is that of the same batches: neither is a certificate."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def stage_dirs(run: Path) -> list[Path]:
    """The run itself, or a cascade's stage folders in order."""
    stages = sorted(run.glob("stage*/metrics.csv"), key=lambda p: int(p.parent.name[5:]))
    return [p.parent for p in stages] if stages else [run]


def table(metrics: pd.DataFrame) -> str:
    lines = ["| epoch | eps | lr | robust loss | robust err (estimate) | clean err | seconds |",
             "|---|---|---|---|---|---|---|"]
    for row in metrics.itertuples():
        lines.append(f"| {row.epoch} | {row.eps:.4f} | {row.lr:.2e} | {row.robust_loss:.4f} | "
                     f"{100 * row.robust_err_estimate:.2f} % | {100 * row.clean_err:.2f} % | {row.seconds:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an onnxdual train --out folder")
    args = parser.parse_args()
    for stage in stage_dirs(args.run):
        metrics = pd.read_csv(stage / "metrics.csv")
        print(f"### {stage.name}: {len(metrics)} epochs, {metrics.seconds.sum() / 3600:.2f} h of training\n")
        print(table(metrics) + "\n")


if __name__ == "__main__":
    main()
