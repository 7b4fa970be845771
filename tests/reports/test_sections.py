"""The certification report's sections: an absolute verdict, per-class numbers, thumbnails of undecided and
broken examples with their PGD adversarial, the bound-vs-attack scatter, dual-layer provenance, rounded
summaries, and what certify hands the report (the adversarials it keeps)."""

from __future__ import annotations

import base64
import io
import re
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import onnxdual
from onnxdual.certify.run import SHOWN_ADVERSARIALS, CertifySettings, Stage, certify
from onnxdual.errors import InvalidInputError
from onnxdual.reports import render_html, write_certify_report
from onnxdual.reports.examples import outcomes, per_class_rows
from onnxdual.reports.meta import dual_layer_sources, package_version
from tests.onnx_builders import conv_maxpool_model
from tests.reports.synthetic import make_meta, make_results


def _summary(cert: float, clean: float, pgd: float, n: int = 100) -> pd.DataFrame:
    return pd.DataFrame([{"eps": 0.1, "stage": "all", "n": n, "clean_accuracy": clean, "certified_accuracy": cert,
                          "pgd_accuracy": pgd}])


def _badge(html: str) -> str:
    return re.search(r'<span class="badge (\w+)" title="[^"]*">([^<]+)</span>', html).group(2)


@pytest.mark.parametrize("cert,clean,pgd,label", [
    (0.22, 0.23, 0.225, "Weakly certified"),      # the cascade: 96% of the correct ones, 22% of all
    (0.85, 0.99, 0.9, "Strongly certified"),
    (0.55, 0.60, 0.58, "Partially certified"),
    (0.39, 0.98, 0.9, "Weakly certified"),
    (0.0, 0.98, 0.5, "Nothing certified"),
])
def test_verdict_is_absolute_certified_accuracy_and_says_so(cert, clean, pgd, label):
    examples, _, _ = make_results(n=20, eps=(0.1,), stages=1)
    html = render_html(examples, _summary(cert, clean, pgd), make_meta())
    assert _badge(html) == label
    meaning = html.split('id="verdict-meaning">')[1].split("</p>")[0]
    assert "<b>all</b>" in meaning and "not relative to clean accuracy" in meaning and "80%" in meaning
    if cert:
        assert f"{cert:.1%} of all examples are provably robust" in html


def test_per_class_table_counts_each_label():
    examples = pd.DataFrame({
        "index": range(6), "eps": 0.1, "label": [0, 0, 0, 1, 1, 1], "prediction": [0, 0, 2, 1, 1, 1],
        "certified": [True, False, False, True, True, False], "margin_lower_bound": [1, -1, -2, 1, 1, -1],
        "pgd_success": [False, True, True, False, False, False], "pgd_margin": [2, -1, -1, 2, 2, 1]})
    eps, rows = per_class_rows(examples, outcomes(examples))
    assert eps == ["0.1"]
    zero, one = rows
    assert (zero["n"], zero["clean"], zero["cells"][0]) == ("3", "66.7%", {"cert": "33.3%", "pgd": "33.3%"})
    assert (one["n"], one["clean"], one["cells"][0]) == ("3", "100.0%", {"cert": "66.7%", "pgd": "100.0%"})
    assert zero["worst"] and not one["worst"]
    html = render_html(examples, _summary(0.5, 0.83, 0.5, n=6), make_meta())
    table = html.split('<table class="classes">')[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 2 and "66.7%" in table


def _decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def _adversarials(shape, n=3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        x = rng.random(shape).astype(np.float32)
        rows.append({"index": i, "eps": 0.2, "outcome": "broken" if i % 2 else "undecided", "pgd_margin": 0.5 - i,
                     "input": x, "adversarial": np.clip(x + rng.uniform(-0.2, 0.2, shape), 0, 1)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (28, 28)])
def test_gallery_shows_inputs_next_to_their_adversarial(shape):
    examples, summary, cascade = make_results(n=30, eps=(0.1, 0.2), stages=2)
    html = render_html(examples, summary, make_meta(), cascade, adversarials=_adversarials(shape))
    gallery = html.split('id="gallery"')[1].split("</section>")[0]
    uris = re.findall(r'<img src="(data:image/png;base64,[^"]+)"', gallery)
    assert len(uris) == 3 * 3  # clean, adversarial, difference per example
    side = shape[-1]
    for uri in uris:
        image = _decode(uri)
        assert image.size == (side, side)
    assert gallery.count("broken by PGD") == 1 and gallery.count(">undecided<") == 2


def test_gallery_of_non_images_says_so_and_bad_frames_are_refused():
    examples, summary, _ = make_results(n=10, eps=(0.2,), stages=1)
    html = render_html(examples, summary, make_meta(), adversarials=_adversarials((7,)))
    assert "The inputs are not images" in html and "<img" not in html
    assert 'id="gallery"' not in render_html(examples, summary, make_meta())
    with pytest.raises(InvalidInputError, match="adversarial"):
        render_html(examples, summary, make_meta(), adversarials=_adversarials((7,)).drop(columns="adversarial"))


def test_scatter_of_bound_against_attack_and_bitmap_for_many_points():
    examples, summary, _ = make_results(n=30, eps=(0.1,), stages=1)
    html = render_html(examples, summary, make_meta())
    scatter = html.split('id="scatter"')[1].split("</figure>")[0]
    assert 'id="chart-scatter"' in scatter and "<image" not in scatter  # few points: vector markers
    many, summary, _ = make_results(n=1000, eps=(0.1,), stages=1)
    scatter = render_html(many, summary, make_meta()).split('id="scatter"')[1].split("</figure>")[0]
    assert "<image" in scatter and len(scatter) < 200_000  # one embedded bitmap, not 1000 elements
    no_attack = examples.drop(columns="pgd_margin")
    assert 'id="scatter"' not in render_html(no_attack, summary, make_meta())


def test_versions_come_from_package_metadata():
    assert package_version("onnx2torch") == metadata.version("onnx2torch") != "?"
    assert package_version("surely-not-an-installed-distribution") == "not installed"


def test_dual_layer_sources_name_the_plugin_and_the_page_shows_them():
    pytest.importorskip("onnxdual_maxpool", reason="the MaxPool plugin is not installed")
    net = onnxdual.load(conv_maxpool_model(np.random.default_rng(0)))
    sources = dual_layer_sources([net])
    assert list(sources) == ["onnxdual", "onnxdual-maxpool"]  # built-in first
    assert sources["onnxdual-maxpool"] == {"version": metadata.version("onnxdual-maxpool"),
                                           "operators": ["MaxPool"], "builtin": False}
    assert {"Conv", "Relu", "Gemm"} <= set(sources["onnxdual"]["operators"])
    examples, summary, _ = make_results(n=10, eps=(0.1,), stages=1)
    html = render_html(examples, summary, make_meta(dual_layers=sources))
    layers = html.split('id="dual-layers"')[1].split("</ul>")[0]
    assert "<b>onnxdual-maxpool</b>" in layers and "(plugin): MaxPool" in layers and "(built-in)" in layers


def test_summary_files_hold_round_numbers(tmp_path):
    examples, summary, cascade = make_results(n=30, eps=(0.1,), stages=2)
    summary = summary.assign(certified_accuracy=1 / 3, examples_per_second=10 / 3, seconds=2 / 3)
    paths = write_certify_report(tmp_path, examples, summary, make_meta(), cascade)
    text = paths["summary_csv"].read_text()
    assert "0.333333," in text and "3.333," in text and "0.667" in text and "0.3333333" not in text
    assert "0.3333333" not in paths["summary_json"].read_text()
    back = pd.read_csv(paths["summary_csv"])
    assert back["certified_accuracy"].eq(0.333333).all()


def test_certify_keeps_undecided_and_broken_examples_with_their_adversarial(one_thread):
    pytest.importorskip("onnxdual_maxpool", reason="the MaxPool plugin is not installed")
    net = onnxdual.load(conv_maxpool_model(np.random.default_rng(3)))
    x = torch.rand(60, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(1)  # every example correct, so every uncertified one is undecided or broken
    eps = 0.15
    result = certify([Stage("m", Path("m.onnx"), net)], x, y,
                     CertifySettings(eps=(eps,), clip=(0.0, 1.0), relaxation="paper", pgd_steps=10))
    examples, kept = result.examples_frame(), result.adversarials_frame()
    assert len(kept) and list(kept.columns) == ["index", "eps", "outcome", "pgd_margin", "input", "adversarial"]
    by_index = examples.set_index("index")
    for outcome in ("undecided", "broken"):
        expected = by_index[~by_index.certified & (by_index.pgd_success == (outcome == "broken"))]
        got = kept[kept.outcome == outcome]
        assert list(got["index"]) == list(expected.index[:SHOWN_ADVERSARIALS])
    for row in kept.itertuples():
        assert np.array_equal(row.input, x[row.index].numpy())
        assert np.abs(row.adversarial - row.input).max() <= eps + 1e-6  # inside the ball ...
        assert row.adversarial.min() >= 0 and row.adversarial.max() <= 1  # ... and the data domain
        with torch.no_grad():
            logits = net(torch.as_tensor(row.adversarial)[None])[0]
        others = torch.cat([logits[:y[row.index]], logits[y[row.index] + 1:]])
        assert float(logits[y[row.index]] - others.max()) == pytest.approx(row.pgd_margin, abs=1e-4)
