"""`onnxdual bench`: results and report files, ground truth (a planted wrong answer is caught), baselines
(lost answers and slowdowns), unsupported networks as rows, and the shared VNN-COMP subset with zero unsound
answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from click.testing import CliRunner
from onnx import helper
from onnxdual_cli.bench import bench_command

from onnxdual import bench
from tests.onnx_builders import make_model

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "benchmarks" / "vnnlib"


def vnnlib1(lo: float, hi: float, threshold: float) -> str:
    declare = "".join(f"(declare-const {v} Real)\n" for v in ("X_0", "X_1", "Y_0", "Y_1"))
    box = "".join(f"(assert (>= {v} {lo}))\n(assert (<= {v} {hi}))\n" for v in ("X_0", "X_1"))
    return declare + box + f"(assert (>= Y_0 {threshold}))\n"


@pytest.fixture
def folder(tmp_path) -> Path:
    """A benchmark folder: y = relu([x0 + x1, x0 - x1]) on [0, 1]^2 (max y0 = 2), one unsat, one sat and
    one unsupported instance."""
    (tmp_path / "onnx").mkdir()
    (tmp_path / "vnnlib").mkdir()
    w = np.array([[1.0, 1.0], [1.0, -1.0]], np.float32)
    gemm = helper.make_node("Gemm", ["input", "W"], ["h"], transB=1)
    nodes = [gemm, helper.make_node("Relu", ["h"], ["output"])]
    onnx.save(make_model(nodes, [2], [2], {"W": w}), str(tmp_path / "onnx" / "net.onnx"))
    odd = [gemm, helper.make_node("Tan", ["h"], ["output"])]
    onnx.save(make_model(odd, [2], [2], {"W": w}), str(tmp_path / "onnx" / "tan.onnx"))
    (tmp_path / "vnnlib" / "unsat.vnnlib").write_text(vnnlib1(0.0, 1.0, 2.5))
    (tmp_path / "vnnlib" / "sat.vnnlib").write_text(vnnlib1(0.0, 1.0, 1.5))
    (tmp_path / "instances.csv").write_text("onnx/net.onnx,vnnlib/unsat.vnnlib,10\n"
                                            "onnx/net.onnx,vnnlib/sat.vnnlib,10\n"
                                            "onnx/tan.onnx,vnnlib/sat.vnnlib,10\n")
    (tmp_path / "expected.csv").write_text("onnx,vnnlib,expected\nonnx/net.onnx,vnnlib/unsat.vnnlib,unsat\n"
                                           "onnx/net.onnx,vnnlib/sat.vnnlib,sat\nonnx/tan.onnx,vnnlib/sat.vnnlib,sat\n")
    return tmp_path


def run(*args):
    return CliRunner().invoke(bench_command, [str(a) for a in args], catch_exceptions=False)


def test_bench_writes_results_and_report(folder, tmp_path):
    out = tmp_path / "out"
    result = run(folder, "--expected", folder / "expected.csv", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    for name in ("results.csv", "summary.csv", "summary.json", "report.html"):
        assert (out / name).stat().st_size > 0
    res = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert list(res.answer) == ["unsat", "sat", "unsupported"]
    assert list(res.verdict) == ["correct", "correct", "unsolved"]
    assert "Tan" in res.note[2]
    assert {"instance", "answer", "seconds", "best_margin"} <= set(res.columns)
    assert float(res.best_margin[0]) > 0
    html = (out / "report.html").read_text()
    assert "<script" not in html and "No unsound answer" in html


def test_a_planted_wrong_answer_is_reported_as_unsound(folder, tmp_path):
    wrong = folder / "wrong.csv"
    wrong.write_text("onnx,vnnlib,expected\nonnx/net.onnx,vnnlib/sat.vnnlib,unsat\n")
    out = tmp_path / "out"
    result = run(folder, "--expected", wrong, "--out", out, "--quiet")
    assert result.exit_code == 3
    assert "UNSOUND" in result.stderr and "vnnlib/sat.vnnlib" in result.stderr
    assert "Unsound answers (1)" in (out / "report.html").read_text()


def test_baseline_regressions(folder, tmp_path):
    out = tmp_path / "out"
    assert run(folder, "--out", out, "--quiet").exit_code == 0
    baseline = pd.read_csv(out / "results.csv", keep_default_na=False)
    same = run(folder, "--baseline", out / "results.csv", "--out", tmp_path / "same", "--quiet")
    assert same.exit_code == 0
    # an instance the baseline solved is now unsolved: make the baseline claim the unsupported one was sat
    lost = baseline.copy()
    lost.loc[2, "answer"] = "sat"
    lost.to_csv(tmp_path / "lost.csv", index=False)
    result = run(folder, "--baseline", tmp_path / "lost.csv", "--out", tmp_path / "o2", "--quiet")
    assert result.exit_code == 4 and "lost" in result.stderr and "tan" in result.stderr
    # slower than the factor allows (a baseline of zero seconds and no slack)
    fast = baseline.copy()
    fast["seconds"] = 0.0
    fast.to_csv(tmp_path / "fast.csv", index=False)
    result = run(folder, "--baseline", tmp_path / "fast.csv", "--slack", "0", "--out", tmp_path / "o3",
                 "--quiet")
    assert result.exit_code == 4 and "slower" in result.stderr
    found = bench.find_regressions(baseline, fast, slowdown=3.0, slack=0.0)
    assert {r["kind"] for r in found} == {"slower"} and len(found) == 2


def test_instances_files_and_errors(folder, tmp_path):
    items = bench.read_instances(folder / "instances.csv")
    assert [i.name for i in items] == ["net/unsat", "net/sat", "tan/sat"]
    assert items[0].onnx_path == (folder / "onnx" / "net.onnx").resolve()
    with_header = tmp_path / "h.csv"
    with_header.write_text("onnx,vnnlib,timeout\nonnx/net.onnx,vnnlib/sat.vnnlib,5\n")
    assert len(bench.read_instances(with_header, root=folder)) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("onnx/net.onnx,vnnlib/sat.vnnlib\n")
    result = run(bad, "--root", folder, "--out", tmp_path / "o")
    assert result.exit_code == 2 and result.stderr.startswith("onnxdual: error:")
    assert "Traceback" not in result.stderr
    missing = tmp_path / "m.csv"
    missing.write_text("onnx/nope.onnx,vnnlib/sat.vnnlib,5\n")
    result = run(missing, "--root", folder, "--out", tmp_path / "o4", "--quiet")
    assert result.exit_code == 0
    assert pd.read_csv(tmp_path / "o4" / "results.csv").answer[0] == "error"


def test_the_regression_suite_matches_its_ground_truth(tmp_path):
    """benchmarks/vnnlib (our own networks; answers from an exact MILP): every answer correct."""
    out = tmp_path / "suite"
    result = run(SUITE, "--expected", SUITE / "expected.csv", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    res = pd.read_csv(out / "results.csv")
    assert (res.verdict == "correct").all(), res[["instance", "answer", "expected"]]


def test_shared_subset_has_no_unsound_answer(shared, tmp_path):
    """A fast subset of real VNN-COMP instances (benchmarks/vnnlib/shared_subset.csv, paths relative to
    ../shared/benchmarks/vnncomp): zero unsound answers against the official ground truth."""
    root = shared("benchmarks", "vnncomp")
    out = tmp_path / "shared"
    result = run(SUITE / "shared_subset.csv", "--root", root, "--expected", root / "expected.csv",
                 "--out", out, "--quiet")
    res = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert result.exit_code == 0, res[res.verdict == "unsound"]
    assert (res.verdict != "unsound").all()
    assert (res.answer.isin(["sat", "unsat"])).sum() >= len(res) // 2  # and it is not vacuous
