"""`onnxdual bench --workers N` and bench under torchrun: the same answers as one process, and a worker that
dies or hangs mid-instance costs only that instance (``error`` / ``timeout``), never the run. Faults are
injected deterministically (``ONNXDUAL_BENCH_FAULT``), never by racing a timer."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from onnxdual_cli.bench import bench_command

from onnxdual import bench
from onnxdual.bench_workers import FAULT_VARIABLE

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "benchmarks" / "vnnlib"
#: the suite's instances that take a small part of their 10 s (acas_like needs half of it on a quiet core:
#: on a loaded machine its answer could depend on the load, not on the number of workers)
QUICK = ("mlp2", "conv", "skip")
ANSWER = ["instance", "answer"]


@pytest.fixture
def quick(tmp_path) -> Path:
    rows = [r for r in (SUITE / "instances.csv").read_text().splitlines()
            if r.split("/")[1].split(".")[0] in QUICK]
    path = tmp_path / "quick.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def bench_cli(quick: Path, out: Path, *args: str):
    result = CliRunner().invoke(bench_command, [str(quick), "--root", str(SUITE), "--out", str(out),
                                                "--device", "cpu", "--quiet", *args])
    assert result.exit_code == 0, result.output
    return pd.read_csv(out / "results.csv", keep_default_na=False)


def test_two_workers_give_the_answers_of_one(quick, tmp_path):
    one = bench_cli(quick, tmp_path / "one")
    two = bench_cli(quick, tmp_path / "two", "--workers", "2")
    assert len(one) == 8 and set(one.answer) == {"sat", "unsat"}
    pd.testing.assert_frame_equal(two[ANSWER + ["onnx", "vnnlib", "timeout"]],
                                  one[ANSWER + ["onnx", "vnnlib", "timeout"]])


def test_a_worker_that_dies_mid_instance_makes_it_an_error_and_the_run_goes_on(quick, tmp_path, monkeypatch):
    one = bench_cli(quick, tmp_path / "one")
    monkeypatch.setenv(FAULT_VARIABLE, "exit:conv/conv_robust_unsat")
    two = bench_cli(quick, tmp_path / "two", "--workers", "2")
    died = two.instance == "conv/conv_robust_unsat"
    assert list(two.answer[died]) == ["error"]
    assert "worker deciding it died (exit code 70)" in two.note[died].item()
    # every other instance decided as by one process, in the same order: nothing lost
    pd.testing.assert_frame_equal(two[~died][ANSWER].reset_index(drop=True),
                                  one[~died][ANSWER].reset_index(drop=True))
    assert '"error": 1' in (tmp_path / "two" / "summary.json").read_text().replace("\n", "").replace("  ", "")


def test_a_worker_that_overruns_its_instance_is_killed_and_the_instance_is_a_timeout(monkeypatch):
    # a hung worker (it would never return) is killed `grace` seconds past the instance's timeout
    monkeypatch.setenv(FAULT_VARIABLE, "hang:skip/skip_lin_unsat")
    # the hung instance gets 1 s; the other one its own 10 s (a fresh worker's first instance is slow on a
    # loaded machine)
    instances = [replace(i, timeout=1.0) if i.name == "skip/skip_lin_unsat" else i
                 for i in bench.read_instances(SUITE) if "skip" in i.onnx]
    results = bench.run_benchmark(instances, workers=2, grace=0.5, device="cpu")
    by_name = dict(zip(results.instance, results.answer))
    assert by_name == {"skip/skip_lin_unsat": "timeout", "skip/skip_lin_sat": "sat"}
    note = results.note[results.instance == "skip/skip_lin_unsat"].item()
    assert note.startswith("killed: still running 0.5 s after its 1 s limit")


def test_two_ranks_under_torchrun_write_one_results_file_with_every_answer(quick, tmp_path):
    one = bench_cli(quick, tmp_path / "one")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "ranks"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, "-m", "onnxdual_cli.main", "bench", str(quick), "--root", str(SUITE),
                           "--out", str(out), "--device", "cpu", "--quiet"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = pd.read_csv(out / "results.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(ranks[ANSWER], one[ANSWER])
    report = (out / "report.html").read_text()
    assert "rank 0 on" in report and "rank 1 on" in report and ": 4 instances" in report
