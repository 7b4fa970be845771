"""Every real VNN-COMP property under ../shared/benchmarks/vnncomp parses, fast, with the variable counts of
the networks it is paired with (README table, and the ONNX graphs of instances.csv).

Needs the development data folder ``../shared`` (the ``shared`` fixture of tests/conftest.py, i.e.
``Path(__file__).resolve().parents[2].parent / "shared"``); skipped with a reason when it is absent.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from onnxdual.specs import parse_vnnlib
from tests.conftest import SHARED

VNNCOMP = SHARED / "benchmarks" / "vnncomp"

# (n_inputs, n_outputs) per benchmark, from the README's "Properties:" lines.
EXPECTED_SIZES = {
    "test_2021": {(1, 1), (5, 5)},
    "acasxu_2021": {(5, 5)},
    "mnistfc_2021": {(784, 10)},
    "oval21_2021": {(3072, 10)},
    "eran_sigmoid_2021": {(784, 10)},
    "verivital_2021": {(784, 10)},
    "sri_resnet_a_2022": {(3072, 10)},
    "collins_rul_cnn_2022": {(400, 1)},
    "rl_benchmarks_2022": {(4, 2), (8, 4), (8, 8)},
    "vit_2023": {(3072, 10)},
    "ml4acopf_2023": {(22, 186)},
    "traffic_signs_recognition_2023": {(2700, 43)},
}

BENCHMARKS = sorted(EXPECTED_SIZES)


@pytest.fixture
def vnncomp(shared):
    return shared("benchmarks", "vnncomp")


@pytest.mark.parametrize("bench", BENCHMARKS)
def test_every_property_parses_with_readme_sizes(vnncomp, bench):
    files = sorted((vnncomp / bench / "vnnlib").glob("*.vnnlib"))
    assert files, f"no .vnnlib files in {vnncomp / bench}"
    for path in files:
        prop = parse_vnnlib(path)
        assert (prop.n_inputs, prop.n_outputs) in EXPECTED_SIZES[bench], path
        assert prop.cases, path
        for region, conjunctions in prop.cases:
            assert np.all(np.isfinite(region.lower)) and np.all(region.lower <= region.upper), path
            assert conjunctions, path
            for c in conjunctions:
                assert c.A.shape[1] == prop.n_outputs and c.A.shape[0] >= 1 and np.all(np.isfinite(c.A)), path


def _flat_size(value_info) -> int:
    """Elements of one sample: symbolic or zero dims (the batch) count as 1."""
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
            for d in value_info.type.tensor_type.shape.dim]
    return math.prod(dims)


@pytest.mark.parametrize("bench", ["mnistfc_2021", "oval21_2021", "collins_rul_cnn_2022",
                                   "rl_benchmarks_2022", "traffic_signs_recognition_2023", "test_2021"])
def test_sizes_match_the_paired_onnx_networks(vnncomp, bench):
    onnx = pytest.importorskip("onnx")
    root = vnncomp / bench
    sizes: dict = {}
    with open(root / "instances.csv", newline="") as f:
        for row in csv.reader(f):
            if not row or row[0].startswith("#"):
                continue
            net_path, prop_path = root / row[0].strip(), root / row[1].strip()
            if net_path not in sizes:
                graph = onnx.load(str(net_path), load_external_data=False).graph
                inits = {i.name for i in graph.initializer}
                (inp,) = [i for i in graph.input if i.name not in inits]
                sizes[net_path] = (_flat_size(inp), _flat_size(graph.output[0]))
            prop = parse_vnnlib(prop_path)
            assert (prop.n_inputs, prop.n_outputs) == sizes[net_path], (net_path.name, prop_path.name)


def test_acasxu_prop6_has_two_input_boxes(vnncomp):
    prop = parse_vnnlib(vnncomp / "acasxu_2021" / "vnnlib" / "prop_6.vnnlib")
    assert len(prop.cases) == 2
    (r0, c0), (r1, c1) = prop.cases
    assert r0.lower[1] > 0 > r1.upper[1]  # X_1 in two disjoint ranges
    np.testing.assert_array_equal(r0.lower[[0, 2, 3, 4]], r1.lower[[0, 2, 3, 4]])
    for conjunctions in (c0, c1):  # unsafe if some Y_j <= Y_0 (COC not minimal)
        assert len(conjunctions) == 4
        for j, c in enumerate(conjunctions, start=1):
            expected = np.zeros((1, 5))
            expected[0, 0], expected[0, j] = -1.0, 1.0
            np.testing.assert_array_equal(c.A, expected)
            np.testing.assert_array_equal(c.b, [0.0])


def test_mnistfc_robustness_property(vnncomp):
    prop = parse_vnnlib(vnncomp / "mnistfc_2021" / "vnnlib" / "prop_0_0.03.vnnlib")  # true label 8
    (region, conjunctions), = prop.cases
    assert region.lower.min() >= 0.0 and region.upper.max() <= 1.0
    assert np.all(region.upper - region.lower <= 2 * 0.03 + 1e-7)
    assert len(conjunctions) == 9
    others = sorted(int(np.flatnonzero(c.A[0] == -1.0)[0]) for c in conjunctions)
    assert others == [0, 1, 2, 3, 4, 5, 6, 7, 9]
    assert all(c.A.shape == (1, 10) and c.A[0, 8] == 1.0 and c.b[0] == 0.0 for c in conjunctions)


def test_collins_if_then_output_band(vnncomp):
    prop = parse_vnnlib(vnncomp / "collins_rul_cnn_2022" / "vnnlib" / "if_then_5levels_w20.vnnlib")
    (region, conjunctions), = prop.cases
    assert region.lower[391] == region.upper[391] == 0.0  # degenerate (fixed) inputs are fine
    (c,) = conjunctions
    assert {tuple(r) + (b,) for r, b in zip(c.A.tolist(), c.b.tolist())} == {(-1.0, -41.0), (1.0, 236.0)}
