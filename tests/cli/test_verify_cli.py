"""`onnxdual verify` / `supports` (the VNN-LIB 2.0 solver interface) and the hidden VNN-COMP commands: stdout
is the verdict and the assignment only, errors are one line on stderr with a non-zero exit, the standard's
error conditions, capabilities, gzip files, and the time limit of a real process."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper
from onnxdual_cli.verify import standalone

from onnxdual import registry
from tests.onnx_builders import make_model, run_ort

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "benchmarks" / "vnnlib"


@pytest.fixture(scope="module")
def net(relu_net) -> Path:
    return relu_net  # tests/cli/conftest.py


def query(tmp_path: Path, threshold: float, elem: str = "Real", name: str = "q.vnnlib",
          net_name: str = "N") -> Path:
    text = f"""(vnnlib-version <2.0>)
(declare-network {net_name}
    (declare-input X {elem} [1,2])
    (declare-output Y {elem} [1,2])
)
(assert (>= X[0,0] 0.0))
(assert (<= X[0,0] 1.0))
(assert (>= X[0,1] 0.0))
(assert (<= X[0,1] 1.0))
(assert (>= Y[0,0] {threshold}))
"""
    path = tmp_path / name
    path.write_text(text)
    return path


def run(*args):
    return CliRunner().invoke(standalone, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxdual: error:"), result.stderr
    assert "Traceback" not in result.stderr


def test_unsat(net, tmp_path):
    result = run("verify", query(tmp_path, 2.5), "--network", f"N={net}", "--timeout", "10")
    assert result.exit_code == 0, result.output
    assert result.stdout == "unsat\n"


def test_sat_prints_the_assignment_in_the_standards_format(net, tmp_path):
    result = run("verify", query(tmp_path, 1.5), "--network", f"N={net}", "--timeout", "10")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "sat" and lines[1] == "X Real [1,2]" and lines[4] == "Y Real [1,2]" and len(lines) == 7
    x = np.array([float(v) for v in lines[2:4]], np.float32)
    y = np.array([float(v) for v in lines[5:7]], np.float32)
    assert np.all((0 <= x) & (x <= 1)) and y[0] >= 1.5
    model = onnx.load(str(net))
    assert np.array_equal(run_ort(model, x.reshape(1, 2)).reshape(-1), y)


def test_serialised_assignments(net, tmp_path):
    out = tmp_path / "assignment"
    result = run("verify", query(tmp_path, 1.5), "--network", f"N={net}", "--serialise-assignments", out)
    assert result.exit_code == 0 and result.stdout == "sat\n", result.output
    x = numpy_helper.to_array(onnx.load_tensor(str(out / "X.pb")))
    y = numpy_helper.to_array(onnx.load_tensor(str(out / "Y.pb")))
    assert x.shape == (1, 2) and y.shape == (1, 2) and y[0, 0] >= 1.5


def test_timed_out(net, tmp_path):
    # the limit counts from the process start, which is long past here: no time left at all
    result = run("verify", query(tmp_path, 1.999), "--network", f"N={net}", "--timeout", "0.001")
    assert result.exit_code == 0, result.output
    assert result.stdout == "timed-out\n"


def test_float32_declarations_are_analysed_as_real_unless_strict(net, tmp_path):
    q = query(tmp_path, 2.5, elem="float32")
    result = run("verify", q, "--network", f"N={net}")
    assert result.exit_code == 0 and result.stdout == "unsat\n"
    assert "real arithmetic" in result.stderr
    assert_one_line_error(run("verify", q, "--network", f"N={net}", "--strict"))


@pytest.mark.parametrize("case", ["malformed", "missing file", "no network", "wrong name", "two files",
                                  "wrong type", "int type", "wrong size", "bad model"])
def test_errors_are_one_line_on_stderr(net, tmp_path, case):
    q = query(tmp_path, 2.5)
    args = ["verify", q, "--network", f"N={net}"]
    if case == "malformed":
        q.write_text("(vnnlib-version <2.0>)\n(declare-network N (declare-input X Real [1,2]")
    elif case == "missing file":
        args[1] = tmp_path / "nope.vnnlib"
    elif case == "no network":
        args = args[:2]
    elif case == "wrong name":  # error condition 1: insufficient / unnecessary model files
        args[3] = f"M={net}"
    elif case == "two files":
        args += ["--network", f"M={net}"]
    elif case == "wrong type":  # error condition 2: declared type differs from the model's
        args[1] = query(tmp_path, 2.5, elem="float64", name="f64.vnnlib")
    elif case == "int type":  # error condition 3: a type onnxdual cannot analyse soundly
        args[1] = query(tmp_path, 2.5, elem="float16", name="f16.vnnlib")
    elif case == "wrong size":
        args[1] = tmp_path / "big.vnnlib"
        args[1].write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1.0))\n"
                           "(assert (>= X_0 0.0))\n(assert (>= Y_0 1.0))\n")
    elif case == "bad model":
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"garbage")
        args[3] = f"N={bad}"
    assert_one_line_error(run(*args))


def test_gzip_query_and_model_and_vnnlib_1(net, tmp_path):
    gz_model = tmp_path / "net.onnx.gz"
    gz_model.write_bytes(gzip.compress(net.read_bytes()))
    text = ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
            "(declare-const Y_1 Real)\n(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n"
            "(assert (<= X_1 1.0))\n"
            "(assert (or (and (>= Y_0 1.5)) (and (>= Y_1 3.0))))\n")
    gz_query = tmp_path / "q.vnnlib.gz"
    gz_query.write_bytes(gzip.compress(text.encode()))
    result = run("verify", gz_query, "--network", f"anything={gz_model}", "--timeout", "10")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "sat" and lines[1] == "X_0 Real []" and lines[5] == "Y_0 Real []" and len(lines) == 9
    assert float(lines[6]) >= 1.5


def test_supports_answers_every_capability(tmp_path):
    def ask(cap):
        result = run("supports", cap)
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()

    assert ask("--onnx-operators") == sorted(str(k) for k in registry.find_duals())
    assert "Relu" in ask("--onnx-operators") and "Tan" not in ask("--onnx-operators")
    lo, hi = ask("--onnx-opset-versions")
    assert 0 < int(lo) <= 8 and 13 <= int(hi)  # VNN-COMP files use opsets 8 to 15
    assert ask("--vnnlib-versions") == ["1.0", "2.0"]
    assert run("supports", "--serialise-assignments").stdout == "true\n"
    assert ask("--onnx-element-types") == ["real"]
    assert ask("--hidden-node-theories")[0] == "NH"  # the others: tests/cli/test_verify_joint.py
    assert ask("--multiple-network-theories")[0] == "SNET"
    assert ask("--multiple-input-output-theories")[0] == "SIO"
    assert ask("--multiple-node-comparison-theories") == ["SNC"]
    assert ask("--arithmetic-complexity-theories")[0] == "BND"
    assert ask("--optimised-disjunctive-reasoning") in (["true"], ["false"])
    assert ask("--unsat-proofs") == ["false"]
    assert ask("--onnx-operators-unsat-proofs") == []
    assert_one_line_error(run("supports", "--teleportation"))
    names = run("supports").stdout.split()
    assert "--onnx-operators" in names and len(names) >= 12


def test_opset_range_is_truthful(tmp_path):
    """Both ends of the reported opset range load and verify (Pad, Conv, Gemm, Relu, Flatten)."""
    lo, hi = (int(v) for v in run("supports", "--onnx-opset-versions").stdout.split())
    inits = {"K": np.ones((1, 1, 1, 1), np.float32), "W": np.array([[1.0, 1.0], [1.0, -1.0]], np.float32),
             "B": np.zeros(2, np.float32)}
    for opset in (lo, hi):
        pad = helper.make_node("Pad", ["input"], ["p"], pads=[0, 0, 0, 0, 0, 0, 0, 0]) if opset < 11 else \
            helper.make_node("Pad", ["input", "P"], ["p"])
        nodes = [pad, helper.make_node("Conv", ["p", "K"], ["c"]), helper.make_node("Flatten", ["c"], ["f"]),
                 helper.make_node("Gemm", ["f", "W", "B"], ["h"], transB=1),
                 helper.make_node("Relu", ["h"], ["output"])]
        extra = {} if opset < 11 else {"P": np.zeros(8, np.int64)}
        model = make_model(nodes, [1, 2, 1], [2], {**inits, **extra}, opset=opset)
        model.ir_version = 4 if opset < 9 else 8
        path = tmp_path / f"op{opset}.onnx"
        onnx.save(model, str(path))
        result = run("verify", query(tmp_path, 2.5), "--network", f"N={path}")
        assert result.stdout == "unsat\n", (opset, result.output)


def test_vnncomp_results_file(net, tmp_path):
    v1 = tmp_path / "p.vnnlib"
    v1.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                  "(declare-const Y_1 Real)\n(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n"
                  "(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n(assert (>= Y_0 1.5))\n")
    out = tmp_path / "results.txt"
    result = run("vnncomp", "test", net, v1, out, "10", "--device", "cpu", "--threads", "1")
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "sat" and lines[1].startswith("((X_0 ") and lines[-1].endswith(")")
    values = dict(line.strip(" ()").split(" ") for line in lines[1:])
    assert set(values) == {"X_0", "X_1", "Y_0", "Y_1"} and float(values["Y_0"]) >= 1.5
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    result = run("vnncomp", "test", bad, v1, out, "10", "--device", "cpu")
    assert result.exit_code == 1 and out.read_text() == "error\n"
    assert run("vnncomp-prepare", net, v1).exit_code == 0
    assert run("vnncomp-prepare", bad, v1).exit_code == 2


def test_a_real_process_meets_its_time_limit_and_prints_only_the_verdict():
    """As the conformance suite runs it: a subprocess, --timeout counted from the process start. Asserted
    on the process's own clock, never on the test's wall clock (a loaded machine may take longer than the
    limit just to import torch): a limit its own start-up has already used up is answered ``timed-out`` at
    once instead of starting a search; a hard instance (thousands of sub-boxes, unsat by a hair) prints
    only its verdict. That a search stops at its deadline is tested on a counting clock
    (tests/verify/test_verifier.py); how fast it is, is a benchmark's business."""
    onnx_path = SUITE / "onnx" / "acas_like.onnx"
    hard = SUITE / "vnnlib" / "acas_like_min0_unsat.vnnlib"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for timeout, verdicts in (("0.001", ("timed-out\n",)), ("4", ("unsat\n", "timed-out\n"))):
        proc = subprocess.run([sys.executable, "-m", "onnxdual_cli.verify", "verify", str(hard), "--network",
                               f"N={onnx_path}", "--timeout", timeout], capture_output=True, text=True,
                              env=env, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout in verdicts, (timeout, proc.stdout)


def test_without_a_timeout_a_search_runs_to_its_end():
    """No --timeout: an unlimited deadline (the regression suite's disjunctive 2.0 query needs splitting)."""
    model = SUITE / "onnx" / "mlp2.onnx"
    result = run("verify", SUITE / "vnnlib" / "mlp2_or_unsat.vnnlib", "--network", f"net={model}")
    assert result.exit_code == 0, result.output
    assert result.stdout == "unsat\n"


def test_relu_splits_can_be_switched_off(tmp_path):
    """A property only ReLU branch and bound proves (inputs not split): unsat, and unknown without it."""
    from tests.milp_oracle import milp_minimum, random_dense

    rng = np.random.default_rng([0, 21])  # the first instance of tests/verify/test_branching.py
    dense = random_dense(rng, 6, [12, 12], 3)
    model = tmp_path / "dense.onnx"
    onnx.save(dense.onnx_model, str(model))
    center, eps, c = rng.uniform(-1, 1, size=6), float(rng.uniform(0.3, 0.8)), rng.normal(size=3)
    threshold = milp_minimum(dense, c.astype(np.float32), center - eps, center + eps) - 0.05
    lo, hi, c = (center - eps).tolist(), (center + eps).tolist(), c.tolist()
    lines = [f"(declare-const X_{i} Real)" for i in range(6)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(3)]
    lines += [f"(assert (>= X_{i} {lo[i]!r}))\n(assert (<= X_{i} {hi[i]!r}))" for i in range(6)]
    lines.append("(assert (<= (+ " + " ".join(f"(* {c[j]!r} Y_{j})" for j in range(3)) + f") {threshold!r}))")
    prop = tmp_path / "p.vnnlib"
    prop.write_text("\n".join(lines) + "\n")
    args = ["verify", prop, "--network", f"N={model}", "--timeout", "20", "--split-max-inputs", "0"]
    assert run(*args).stdout == "unsat\n"
    assert run(*args, "--no-relu-splits").stdout == "unknown\n"
