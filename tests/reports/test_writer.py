"""write_certify_report / render_html: files, CSV/JSON round trips, HTML content, atomicity, errors."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from onnxdual.errors import InvalidInputError
from onnxdual.reports import REPORT_FILES, render_html, write_certify_report
from onnxdual.reports import writer as writer_module
from onnxdual import files as files_module
from onnxdual.reports.formatting import fmt_eps, fmt_norm, fmt_pct, fmt_seconds, to_jsonable
from tests.reports.synthetic import make_meta, make_results

# An attribute that makes the browser fetch something: src/href/srcset/poster/data/action = "http(s)://" or
# "//host", CSS url(...) or @import pointing outside the file.
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|srcset|poster|data|action|xlink:href)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:https?:)?//)|(?:@import)""",
    re.IGNORECASE,
)


@pytest.fixture
def data():
    examples, summary, cascade = make_results(n=40, eps=(0.05, 0.1, 0.2), stages=2, seed=1)
    summary.loc[summary.index[1], "pgd_accuracy"] = np.nan  # NaN must become null in JSON, "—" in HTML
    meta = make_meta(seed=np.int64(7), threshold=np.float32(0.5), missing=float("nan"),
                     nested={"a": np.arange(3), "b": pd.NA})
    return examples, summary, cascade, meta


def _listing(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_writes_the_four_files(tmp_path, data):
    examples, summary, cascade, meta = data
    out = tmp_path / "nested" / "report"  # created, parents included
    paths = write_certify_report(out, examples, summary, meta, cascade)
    assert set(paths) == set(REPORT_FILES)
    assert {p.name for p in paths.values()} == set(REPORT_FILES.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES.values())  # no temp files left
    for p in paths.values():
        assert p.parent == out and p.stat().st_size > 0


def test_csv_round_trips(tmp_path, data):
    examples, summary, cascade, meta = data
    paths = write_certify_report(tmp_path, examples, summary, meta, cascade)
    back = pd.read_csv(paths["examples_csv"])
    assert list(back.columns) == list(examples.columns)
    pd.testing.assert_frame_equal(back, examples.astype({"stage": "float64"}), check_dtype=False)
    back = pd.read_csv(paths["summary_csv"])
    assert list(back.columns) == list(summary.columns)
    pd.testing.assert_frame_equal(back, writer_module.rounded(summary).astype({"stage": str}), check_dtype=False)


def test_summary_json_is_strict_and_nan_is_null(tmp_path, data):
    examples, summary, cascade, meta = data
    paths = write_certify_report(tmp_path, examples, summary, meta, cascade)

    def reject(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    doc = json.loads(paths["summary_json"].read_text(encoding="utf-8"), parse_constant=reject)
    assert set(doc) == {"meta", "summary", "cascade"}
    assert doc["summary"][1]["pgd_accuracy"] is None
    assert len(doc["summary"]) == len(summary) and len(doc["cascade"]) == len(cascade)
    assert doc["summary"][0]["stage"] == "all" and doc["summary"][1]["stage"] == 1
    assert doc["meta"]["seed"] == 7 and doc["meta"]["missing"] is None
    assert doc["meta"]["nested"] == {"a": [0, 1, 2], "b": None}
    assert doc["meta"]["versions"]["onnxdual"] == "0.1.0"
    for row, (_, expected) in zip(doc["summary"], summary.iterrows()):
        for col in ("certified_accuracy", "clean_accuracy", "n"):
            assert row[col] == pytest.approx(expected[col])

    write_certify_report(tmp_path / "plain", examples, summary, meta, None)
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["cascade"] is None


def test_html_has_tables_charts_and_nothing_external(tmp_path, data):
    examples, summary, cascade, meta = data
    paths = write_certify_report(tmp_path, examples, summary, meta, cascade)
    html = paths["report_html"].read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    for table in ('<table class="summary">', '<table class="cascade">', '<table class="examples"',
                  '<table class="classes">'):
        assert table in html
    assert html.count("<svg") == 4  # accuracy, cascade, margin histograms, bound-vs-attack scatter
    assert "Certified by each cascade stage" in html
    assert "Certified " in html and "of 40 examples at ε" in html and "(ℓ∞)" in html  # the headline
    # one inline script (sorting/filtering the example table), nothing loaded from elsewhere
    assert "<details" in html and html.lower().count("<script") == 1 and "<script>" in html
    assert not EXTERNAL.search(html), EXTERNAL.search(html).group(0)
    assert "http://" not in html and "https://" not in html  # not even namespace URLs
    assert meta["command"] in html and "1.26.4" in html  # footer: command, versions
    assert "—" in html  # the NaN PGD accuracy

    html = render_html(examples, summary, meta)  # no cascade: 3 charts, no cascade table
    assert html.count("<svg") == 3
    assert '<table class="cascade">' not in html


def test_svg_ids_are_unique_across_charts(data):
    examples, summary, cascade, meta = data
    html = render_html(examples, summary, meta, cascade)
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    for ref in re.findall(r'(?:href="#|url\(#)([^")]+)', html):
        assert ref in ids


def test_rendering_is_deterministic(data):
    examples, summary, cascade, meta = data
    assert render_html(examples, summary, meta, cascade) == render_html(examples, summary, meta, cascade)


def test_user_text_is_escaped(data):
    examples, summary, cascade, meta = data
    meta = dict(meta, command="onnxdual certify '<script>alert(1)</script>' & more",
                model="a<b>.onnx", dataset="$x$ data")
    cascade = cascade.assign(model="<img src=x onerror=alert(1)> $cost$.onnx")
    html = render_html(examples, summary, meta, cascade, title="</title><script>")
    assert html.lower().count("<script") == 1 and "<img" not in html.lower()  # only the page's own script
    assert "<script>alert" not in html.lower()
    assert "&#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39; &amp; more" in html
    assert "a&lt;b&gt;.onnx" in html
    assert "$cost$.onnx" in html  # matplotlib did not treat it as mathtext


def test_probabilistic_bound_is_labelled(data):
    examples, summary, cascade, meta = data
    exact = render_html(examples, summary, meta, cascade)
    prob = render_html(examples, summary, make_meta(probabilistic=True), cascade)
    assert "Exact bound" in exact and "badge prob" not in exact and "notice prob" not in exact
    assert "badge prob" in prob and "notice prob" in prob and "bound-prob" in prob
    assert "δ = 0.01" in prob and "Probabilistic (δ=0.01)" in prob


def test_example_table_is_capped(data):
    examples, summary, cascade, meta = data
    html = render_html(examples, summary, meta, cascade, max_example_rows=5)
    assert f"Showing the first 5 of {len(examples)} rows" in html
    body = html.split('<table class="examples" id="examples-table">')[1].split("</table>")[0]
    assert body.count("<tr data-outcome=") == 5
    assert "Showing the first" not in render_html(examples, summary, meta, cascade)


def test_unknown_meta_keys_go_to_details(data):
    examples, summary, cascade, meta = data
    html = render_html(examples, summary, dict(meta, custom_key="custom value"), cascade)
    details = html.split("Other details")[1]
    assert "custom_key" in details and "custom value" in details and "threshold" in details


def test_headline_eps_follows_meta_eps_else_largest(data):
    examples, summary, cascade, meta = data
    largest = render_html(examples, summary, meta, cascade)
    assert re.search(r"<h1>Certified .*? at ε&nbsp;=&nbsp;0\.2 ", largest)
    chosen = render_html(examples, summary, dict(meta, eps=0.1), cascade)
    assert re.search(r"<h1>Certified .*? at ε&nbsp;=&nbsp;0\.1 ", chosen)


def test_unsound_results_are_flagged():
    examples, summary, _ = make_results(n=30, eps=(0.1,), stages=1, seed=2)
    i = examples.index[examples["certified"]][0]
    examples.loc[i, "pgd_success"] = True
    html = render_html(examples, summary, make_meta())
    assert "Inconsistent" in html and 'role="alert"' in html
    html = render_html(examples, summary, make_meta(probabilistic=True))
    assert "Conflicting evidence" in html


def test_percent_scaled_accuracies_and_empty_examples():
    examples, summary, _ = make_results(n=10, eps=(0.1,), stages=1)
    scaled = summary.assign(**{c: summary[c] * 100 for c in ("clean_accuracy", "certified_accuracy",
                                                              "pgd_accuracy")})
    assert fmt_pct(summary["certified_accuracy"].iloc[0]) in render_html(examples, scaled, make_meta())
    html = render_html(examples.iloc[0:0], summary, make_meta())
    assert "No examples." in html and html.count("<svg") == 2


def test_atomic_failure_while_rendering_leaves_directory_untouched(tmp_path, data, monkeypatch):
    examples, summary, cascade, meta = data
    (tmp_path / "examples.csv").write_text("old,content\n1,2\n")
    (tmp_path / "report.html").write_text("<p>old report</p>")
    (tmp_path / "notes.txt").write_text("keep me")
    before = _listing(tmp_path)

    def boom(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(writer_module, "render_html", boom)
    with pytest.raises(RuntimeError, match="render failed"):
        write_certify_report(tmp_path, examples, summary, meta, cascade)
    assert _listing(tmp_path) == before


def test_atomic_failure_while_writing_removes_temp_files(tmp_path, data, monkeypatch):
    examples, summary, cascade, meta = data
    out = tmp_path / "rep"
    write_certify_report(out, examples, summary, meta, cascade)
    before = _listing(out)
    real = files_module._write_file
    calls = []

    def flaky(path, data):
        calls.append(path)
        if len(calls) == 3:  # two files of the new set exist by now; the third "runs out of disk space"
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(files_module, "_write_file", flaky)
    with pytest.raises(InvalidInputError, match="No space left on device"):
        write_certify_report(out, examples.head(3), summary, dict(meta, model="new"), cascade)
    assert _listing(out) == before  # old report intact
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no staging directory left


@pytest.mark.skipif(os.name != "posix", reason="POSIX paths")
def test_unwritable_out_dir_is_one_clear_error(tmp_path, data):
    examples, summary, cascade, meta = data
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for bad in (blocker / "report", blocker):
        with pytest.raises(InvalidInputError) as info:
            write_certify_report(bad, examples, summary, meta, cascade)
        message = str(info.value)
        assert "\n" not in message and str(blocker) in message
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_read_only_out_dir_is_one_clear_error(tmp_path, data):
    examples, summary, cascade, meta = data
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(InvalidInputError, match="not writable"):
            write_certify_report(locked, examples, summary, meta, cascade)
    finally:
        locked.chmod(0o755)


def test_bad_inputs_are_invalid_input_errors(tmp_path, data):
    examples, summary, _, meta = data
    with pytest.raises(InvalidInputError, match="summary is missing column.*certified_accuracy"):
        write_certify_report(tmp_path, examples, summary.drop(columns="certified_accuracy"), meta)
    with pytest.raises(InvalidInputError, match="examples must be a pandas DataFrame"):
        render_html([], summary, meta)
    with pytest.raises(InvalidInputError, match="meta must be a dict"):
        render_html(examples, summary, None)
    assert list(tmp_path.iterdir()) == []


def test_formatting_helpers():
    assert fmt_pct(0.87249) == "87.2%" and fmt_pct(float("nan")) == "—" and fmt_pct(None) == "—"
    assert fmt_eps(0.1) == "0.1" and fmt_eps(2 / 255) == "0.007843 (2/255)" and fmt_eps(0.2) == "0.2"
    assert fmt_norm("linf") == fmt_norm(np.inf) == fmt_norm("Linf") == "ℓ∞" and fmt_norm(2) == "ℓ2"
    assert fmt_seconds(12.34) == "12.3 s" and fmt_seconds(245) == "4 min 05 s"
    out = to_jsonable({"a": np.float32(1.5), "b": [np.nan, math.inf, pd.NA], 3: pd.Timestamp("2024-01-01")})
    assert json.dumps(out, allow_nan=False) == '{"a": 1.5, "b": [null, null, null], "3": "2024-01-01T00:00:00"}'


def test_callers_matplotlib_style_does_not_leak_in_or_out(data):
    import matplotlib
    import matplotlib.style

    examples, summary, cascade, meta = data
    reference = render_html(examples, summary, meta, cascade)
    with matplotlib.rc_context():
        matplotlib.style.use("dark_background")
        matplotlib.rcParams["font.size"] = 30
        assert render_html(examples, summary, meta, cascade) == reference
        assert matplotlib.rcParams["font.size"] == 30 and matplotlib.rcParams["axes.facecolor"] == "black"
