"""Per-benchmark answers of onnxdual over the shared VNN-COMP collection, against the ground truth and the
best tool of the official results.

Runs ``onnxdual bench`` on every benchmark folder of ``<shared>/benchmarks/vnncomp`` (skipping those whose
``results.csv`` is already in ``--out`` unless ``--rerun``), then prints one row per benchmark: onnxdual's
unsat / sat / unknown / timeout / unsupported counts, how many answers are correct and how many are
unsound, the expected sat / unsat / unknown counts, and the best tool's correct answers on the same
instances (from the collection's README). Writes the table to ``OUT/vnncomp_table.{csv,md}`` too.

    python benchmarks/vnnlib/vnncomp_table.py --shared ../shared --max-timeout 30 --out vnncomp-sweep

This is a benchmark (minutes to an hour on 2 CPU cores), not a test; CI runs the fast subset
``benchmarks/vnnlib/shared_subset.csv`` through ``tests/cli/test_bench_cli.py``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

#: "... on this subset: nnenum: 23 unsat + 4 sat correct, 0 wrong; ..." in the collection's README
BEST_TOOL = re.compile(r"on this subset: (?P<tool>[^:]+): (?P<unsat>\d+) unsat \+ (?P<sat>\d+) sat correct, "
                       r"(?P<wrong>\d+) wrong")


def best_tools(readme: Path) -> dict[str, dict]:
    """The best tool's counts per benchmark folder, read from the ``### <folder>`` sections of the README."""
    best, section = {}, None
    for line in readme.read_text(encoding="utf-8").splitlines():
        if line.startswith("### "):
            section = line[4:].strip()
        elif section and (m := BEST_TOOL.search(line)):
            best[section] = {"tool": m["tool"].strip(), "unsat": int(m["unsat"]), "sat": int(m["sat"]),
                             "wrong": int(m["wrong"])}
    return best


def run(bench_dir: Path, out: Path, expected: Path, max_timeout: float, threads: int) -> None:
    exe = shutil.which("onnxdual")
    cmd = [exe] if exe else [sys.executable, "-m", "onnxdual_cli.main"]
    cmd += ["bench", str(bench_dir), "--expected", str(expected), "--max-timeout", str(max_timeout),
            "--threads", str(threads), "--quiet", "--out", str(out)]
    # exit 1 would be an unsound answer: the table shows it, so do not stop the sweep here
    subprocess.run(cmd, check=False)


def table(root: Path, out: Path) -> pd.DataFrame:
    best = best_tools(root / "README.md")
    expected = pd.read_csv(root / "expected.csv")
    rows = []
    for bench in sorted(p.name for p in root.iterdir() if (p / "instances.csv").is_file()):
        results_file = out / bench / "results.csv"
        if not results_file.is_file():
            continue
        res = pd.read_csv(results_file)
        exp = expected[expected["benchmark"] == bench]["expected"].value_counts()
        counts = res["answer"].value_counts()
        verdicts = res["verdict"].value_counts() if "verdict" in res else pd.Series(dtype=int)
        b = best.get(bench, {})
        rows.append({
            "benchmark": bench, "instances": len(res),
            **{a: int(counts.get(a, 0)) for a in ("unsat", "sat", "unknown", "timeout", "unsupported", "error")},
            "correct": int(verdicts.get("correct", 0)), "unsound": int(verdicts.get("unsound", 0)),
            "expected sat/unsat/unknown": f"{exp.get('sat', 0)}/{exp.get('unsat', 0)}/{exp.get('unknown', 0)}",
            "best tool": b.get("tool", ""),
            "best tool correct": b["unsat"] + b["sat"] if b else None,
            "best tool unsat/sat": f"{b['unsat']}/{b['sat']}" if b else "",
            "median s": round(float(res["seconds"].median()), 2),
        })
    frame = pd.DataFrame(rows)
    if len(frame):
        numeric = ["instances", "unsat", "sat", "unknown", "timeout", "unsupported", "error", "correct", "unsound",
                   "best tool correct"]
        total = {c: int(frame[c].sum()) for c in numeric}
        frame = pd.concat([frame, pd.DataFrame([{"benchmark": "total", **total}])], ignore_index=True)
    return frame


def markdown(frame: pd.DataFrame) -> str:
    cells = frame.astype(object).where(frame.notna(), "").astype(str)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[3] / "shared")
    parser.add_argument("--out", type=Path, default=Path("vnncomp-sweep"))
    parser.add_argument("--max-timeout", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="benchmark folders to run (default: all)")
    parser.add_argument("--rerun", action="store_true", help="run benchmarks that already have results")
    args = parser.parse_args()
    root = args.shared / "benchmarks" / "vnncomp"
    if not (root / "expected.csv").is_file():
        parser.error(f"no VNN-COMP collection at {root}")
    for bench_dir in sorted(p for p in root.iterdir() if (p / "instances.csv").is_file()):
        if args.only is not None and bench_dir.name not in args.only:
            continue
        if args.rerun or not (args.out / bench_dir.name / "results.csv").is_file():
            print(f"running {bench_dir.name} ...", file=sys.stderr, flush=True)
            run(bench_dir, args.out / bench_dir.name, root / "expected.csv", args.max_timeout, args.threads)
    frame = table(root, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "vnncomp_table.csv", index=False)
    (args.out / "vnncomp_table.md").write_text(markdown(frame), encoding="utf-8")
    print(frame.to_string(index=False))
    return 1 if len(frame) and int(frame["unsound"].iloc[-1]) else 0


if __name__ == "__main__":
    sys.exit(main())
