"""The bench report's cactus plot and the training report (curves of metrics.csv)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from onnxdual.errors import InvalidInputError
from onnxdual.reports.bench import render_bench_html, write_bench_report
from onnxdual.reports.training import TRAINING_REPORT, read_metrics, render_training_html, write_training_report


def bench_results() -> pd.DataFrame:
    rows = []
    for i, (bench, answer, seconds) in enumerate([
            ("acasxu", "unsat", 0.5), ("acasxu", "unsat", 2.0), ("acasxu", "sat", 0.1), ("acasxu", "timeout", 30.0),
            ("mnistfc", "unsat", 1.0), ("mnistfc", "unknown", 3.0), ("mnistfc", "error", None)]):
        rows.append({"benchmark": bench, "instance": f"i{i}", "onnx": f"{bench}/n.onnx", "vnnlib": f"p{i}.vnnlib",
                     "timeout": 30.0, "answer": answer, "seconds": seconds, "load_seconds": 0.1,
                     "best_margin": None, "boxes": 1, "note": ""})
    return pd.DataFrame(rows)


def bench_summary(results: pd.DataFrame) -> pd.DataFrame:
    from onnxdual import bench

    return bench.summary(results)


def test_bench_report_has_a_cactus_plot(tmp_path):
    results = bench_results()
    paths = write_bench_report(tmp_path, results, bench_summary(results), {"title": "t"})
    html = paths["report_html"].read_text()
    cactus = html.split('id="cactus"')[1].split("</section>")[0]
    assert 'id="chart-cactus"' in cactus and "Instances solved against time" in cactus
    # one line per benchmark plus "all", labelled with its solved count (sat + unsat)
    for label in ("acasxu (3)", "mnistfc (1)", "all (4)"):
        assert label in cactus
    assert "<script" not in html.lower()
    empty = render_bench_html(results.iloc[0:0], bench_summary(results.iloc[0:0]), {})
    assert 'id="cactus"' not in empty


def _metrics(epochs: int, start: float = 2.0) -> pd.DataFrame:
    return pd.DataFrame({"epoch": range(1, epochs + 1), "robust_loss": [start / e for e in range(1, epochs + 1)],
                         "robust_err_estimate": [0.9 / e for e in range(1, epochs + 1)],
                         "clean_err": [0.3 / e for e in range(1, epochs + 1)],
                         "eps": [0.1 * e / epochs for e in range(1, epochs + 1)], "lr": 1e-3, "seconds": 2.5})


def test_training_report_of_one_run(tmp_path):
    _metrics(4).to_csv(tmp_path / "metrics.csv", index=False)
    metrics = read_metrics(tmp_path)
    path = write_training_report(tmp_path / TRAINING_REPORT, metrics,
                                 {"model": "m.onnx", "command": "onnxdual train --epochs 4",
                                  "config": {"eps": 0.1, "clip": [0.0, 1.0]}, "certify_report": "report/report.html"})
    html = path.read_text()
    assert path == tmp_path / "training.html"
    assert 'id="chart-training"' in html and 'href="report/report.html"' in html
    assert html.split('<table class="metrics">')[1].count("<tr>") == 1 + 4
    assert "10.0 s" in html and "[0.0, 1.0]" in html  # total time, configuration
    assert "<script" not in html.lower() and not re.search(r"""(src|href)=["']?https?://""", html)
    no_eval = render_training_html(metrics, {"model": "m.onnx", "certify_report": None})
    assert "--no-eval" in no_eval and "report/report.html" not in no_eval


def test_training_report_of_a_cascade_counts_epochs_on(tmp_path):
    for stage, epochs in ((1, 3), (2, 2)):
        (tmp_path / f"stage{stage}").mkdir()
        _metrics(epochs, start=stage).to_csv(tmp_path / f"stage{stage}" / "metrics.csv", index=False)
    metrics = read_metrics(tmp_path)
    assert list(metrics["stage"]) == [1, 1, 1, 2, 2]
    html = render_training_html(metrics, {"model": "cascade.json"})
    assert "one colour per cascade stage" in html and "stage 2: robust loss" in html
    assert html.split('<table class="metrics">')[1].count("<tr>") == 1 + 5


def test_training_report_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(InvalidInputError, match="no metrics.csv"):
        read_metrics(tmp_path)
    with pytest.raises(InvalidInputError, match="robust_loss"):
        render_training_html(pd.DataFrame({"epoch": [1]}), {})
