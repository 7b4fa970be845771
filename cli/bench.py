"""``onnxdual bench``: run a list of VNN-COMP style instances, compare with ground truth and a baseline, and
write ``results.csv``, ``summary.csv``, ``summary.json`` and ``report.html``.

Exit codes: 0 fine; 2 a usage error; 3 an unsound answer (with ``--expected``); 4 a regression against
``--baseline`` (3 wins when both happen).
"""

from __future__ import annotations

import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import click
from onnxdual_cli.config import config_option, write_resolved
from onnxdual_cli.errors import user_errors
from onnxdual_cli.options import (device_option, relaxation_option, search_options, seed_option, setup_torch,
                                  threads_option)

from onnxdual import defaults

UNSOUND = 3
REGRESSION = 4


class _Bar:
    """tqdm progress on stderr (only on a terminal), with the running answer counts."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        self.counts: dict[str, int] = {}
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="inst", file=sys.stderr, dynamic_ncols=True, desc="bench",
                            disable=None)

    def __call__(self, instance, row) -> None:
        self.counts[row["answer"]] = self.counts.get(row["answer"], 0) + 1
        if self.bar is not None:
            text = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.argument("source", type=click.Path(path_type=Path, exists=True))
@click.option("--root", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="Folder the instance paths are relative to. [default: the instances file's folder]")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("onnxdual-bench"),
              show_default=True, help="Directory for results.csv, summary.csv, summary.json, report.html.")
@click.option("--expected", "expected_file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="CSV with onnx, vnnlib, expected (paths relative to its folder): fail on unsound answers. "
                   "[default: none]")
@click.option("--expected-root", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="Folder the --expected paths are relative to. [default: the file's folder]")
@click.option("--baseline", "baseline_file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A previous results.csv: fail on lost answers or slowdowns. [default: none]")
@click.option("--slowdown", type=click.FloatRange(min=1.0), default=3.0, show_default=True,
              help="Regression when an instance gets slower than this factor of the baseline ...")
@click.option("--slack", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="... plus this many seconds.")
@click.option("--max-timeout", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Cap every instance's timeout (seconds). [default: the instance's own]")
@click.option("--filter", "pattern", default=None,
              help="Only instances whose onnx or vnnlib path contains this. [default: all]")
@click.option("--strict", is_flag=True, help="Refuse proofs within float32 rounding of zero.")
@search_options
@relaxation_option(defaults.VERIFY_RELAXATION)
@device_option()
@threads_option("1 (timings comparable between runs and with --baseline)")
@click.option("--workers", type=click.IntRange(min=1, max=1024), default=1, show_default=True,
              help="Worker processes deciding instances at once, one thread and one instance each, every "
                   "instance with its own time limit (as VNN-COMP runs a verifier); a worker that crashes or "
                   "overruns makes its instance an error or a timeout. Under torchrun: per rank, the "
                   "instances dealt out over the ranks.")
@seed_option
@click.option("--quiet", is_flag=True, help="No progress bar and no summary on stdout.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of text.")
@user_errors
def bench_command(source, root, out, expected_file, expected_root, baseline_file, slowdown, slack,
                  max_timeout, pattern, strict, split_max_inputs, no_relu_splits, relaxation, device, threads_text,
                  workers, seed, quiet, as_json):
    """Decide every instance of SOURCE (a folder with instances.csv, or a CSV of onnx,vnnlib,timeout rows).

    On several processes or machines: torchrun --nproc_per_node N [--nnodes M ...] --no-python onnxdual bench
    SOURCE ...: each rank decides its share, rank 0 writes the one results.csv and report."""
    import onnxdual
    from onnxdual import bench
    from onnxdual.distributed import gather_objects, host, join_torchrun, shutdown_distributed
    from onnxdual.reports.bench import write_bench_report

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    instances = bench.read_instances(source, root)
    if pattern:
        instances = [i for i in instances if pattern in i.onnx or pattern in i.vnnlib]
        if not instances:
            raise click.UsageError(f"no instance matches --filter {pattern!r}")
    expected = bench.read_expected(expected_file, expected_root) if expected_file else None
    baseline = bench.read_results(baseline_file) if baseline_file else None
    threads = threads_text or 1
    dev = setup_torch(threads, device)
    dev, world = join_torchrun(dev.type)  # under torchrun: this rank's device and place
    mine = bench.shard_instances(instances, world)
    bar = _Bar(len(mine), enabled=not quiet and not as_json and world.main)
    t_run = time.perf_counter()
    try:
        results = bench.run_benchmark(instances, max_timeout=max_timeout, strict=strict, device=dev,
                                      seed=seed, progress=bar, workers=workers, world=world,
                                      verifier_options={"split_max_inputs": split_max_inputs,
                                                        "relu_branching": not no_relu_splits,
                                                        "relaxation": relaxation})
    finally:
        bar.close()
    ranks = gather_objects({"rank": world.rank, "host": host(), "device": str(dev), "instances": len(mine),
                            "seconds": round(time.perf_counter() - t_run, 2)}, world)
    shutdown_distributed()
    if not world.main:  # every rank holds all rows; rank 0 alone writes and reports them
        return
    if expected is not None:
        results = bench.compare_expected(results, instances, expected)
    unsound = bench.unsound_rows(results)
    regressions = bench.find_regressions(results, baseline, slowdown=slowdown, slack=slack) \
        if baseline is not None else []
    summary = bench.summary(results)
    meta = {
        "title": f"Benchmark report — {source}",
        "command": "onnxdual " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "source": str(source), "root": str(root) if root else None,
        "expected": str(expected_file) if expected_file else None,
        "baseline": str(baseline_file) if baseline_file else None,
        "max_timeout": max_timeout, "strict": strict, "split_max_inputs": split_max_inputs,
        "relu_splits": not no_relu_splits,
        "device": str(dev), "threads": threads, "workers": workers,
        **({"ranks": "; ".join(f"rank {r['rank']} on {r['host']} ({r['device']}): {r['instances']} instances "
                               f"in {r['seconds']:g} s" for r in ranks)} if world.active else {}),
        "onnxdual": onnxdual.__version__, "python": platform.python_version(),
        "started": started.isoformat(timespec="seconds"), "seconds": round(time.perf_counter() - t0, 2),
    }
    paths = write_bench_report(out, results, summary, meta, unsound=unsound.to_dict(orient="records"),
                               regressions=regressions)
    paths["config"] = write_resolved(out)
    if as_json:
        import json

        click.echo(json.dumps({"meta": meta, "summary": json.loads(summary.to_json(orient="records")),
                               "unsound": len(unsound), "regressions": regressions,
                               "files": {k: str(v) for k, v in paths.items()}}, indent=2, default=str))
    elif not quiet:
        overall = summary.iloc[-1]
        parts = [f"{a} {int(overall[a])}" for a in bench.ANSWERS if int(overall[a])]
        click.echo(f"{len(results)} instances: " + ", ".join(parts)
                   + (f"; {int(overall['correct'])} correct, {int(overall['unsound'])} unsound"
                      if expected is not None else "")
                   + f" ({meta['seconds']:.1f}s)")
        click.echo(f"report: {paths['report_html']}")
    for r in unsound.itertuples():
        click.echo(f"onnxdual: error: UNSOUND answer {r.answer} (expected {r.expected}) for "
                   f"{r.onnx} {r.vnnlib}", err=True)
    for r in regressions:
        click.echo(f"onnxdual: error: regression ({r['kind']}) on {r['instance']}: baseline "
                   f"{r['baseline']} in {r['baseline_seconds']}s, now {r['now']} in {r['seconds']}s",
                   err=True)
    if len(unsound):
        sys.exit(UNSOUND)
    if regressions:
        sys.exit(REGRESSION)


__all__ = ["bench_command"]
