"""Hostile and careless inputs through the commands (issue 17 A, D, H): malformed ONNX, VNN-LIB 1.0 / 2.0,
cascade manifests, instance lists and arguments. Each must end in exit 2 with exactly one
``onnxdual: error:`` line on stderr and nothing on stdout: no traceback, no crash, no file read outside the
given inputs, nothing touched outside ``--out``.

Every case runs from a directory of decoy files (``decoys``): an ``m.onnx.data`` with other weights, a
property that would answer differently, a secret. A Python audit hook records every file opened during a
case; none may lie in the decoy directory, and the secret appears in no output. Most cases run in-process
(click's CliRunner through the ``onnxdual`` group, fast); a few run as real processes (start-up imports,
warnings, ``vnncomp/run_instance.sh``). Generated inputs use hypothesis with a bounded number of examples
(set ``ONNXDUAL_FUZZ_EXAMPLES`` for a longer run); the whole module takes well under a minute.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper
from onnxdual_cli.main import cli

from onnxdual.inputfiles import MAX_DECOMPRESSED_ENV
from onnxdual.specs import SpecError, parse_vnnlib_text
from tests.onnx_builders import make_model
from tests.specs.queries import BOX_QUERY

REPO = Path(__file__).resolve().parents[2]
SECRET = "DECOY-SECRET-7f3a9c"
EXAMPLES = int(os.environ.get("ONNXDUAL_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

HEAD = "".join(f"(declare-const {v} Real)\n" for v in ("X_0", "X_1", "Y_0", "Y_1"))
BOX = "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n"
V1 = HEAD + BOX + "(assert (or (and (>= Y_0 2.5) (<= Y_1 1.0)) (>= (+ Y_0 (* -1 Y_1)) 3.0)))\n"
V2 = BOX_QUERY.format(t="Real") + \
    "(assert (or (and (<= Y[0,1] 3.0) (>= Y[0,0] 1.0)) (<= Y[0,0] (+ Y[0,1] 1.0))))\n"

# ------------------------------------------------------------------------------------ the open() audit

_OPENED: list[str] | None = None


def _audit(event: str, args) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # (a hook cannot be removed: it records only while a case runs)


@pytest.fixture
def decoys(tmp_path, monkeypatch):
    """The current directory: decoy files a careless resolver would pick up. Returns (decoy dir, inputs
    dir); the decoys are checked unread and unchanged after the case."""
    cwd, inputs = tmp_path / "cwd", tmp_path / "inputs"
    cwd.mkdir()
    inputs.mkdir()
    (cwd / "secret.txt").write_text(SECRET + "\n")
    (cwd / "m.onnx.data").write_bytes(np.full(64, 99.0, np.float32).tobytes())
    (cwd / "w.bin").write_bytes(np.full(64, 99.0, np.float32).tobytes())
    (cwd / "p.vnnlib").write_text(HEAD + BOX + "(assert (>= Y_0 -100.0))\n")  # sat: a decoy answer
    (cwd / "cascade.json").write_text(json.dumps({"format": "onnxdual-cascade", "stages": [{"onnx": "x"}]}))
    before = {p.name: p.read_bytes() for p in cwd.iterdir()}
    monkeypatch.chdir(cwd)
    yield cwd, inputs
    assert {p.name: p.read_bytes() for p in cwd.iterdir()} == before, "the decoy directory was touched"


def invoke(decoys, *args, env=None):
    """Run ``onnxdual ARGS`` in-process; assert nothing in the decoy directory was opened."""
    global _OPENED
    cwd = decoys[0].resolve()
    _OPENED = []
    try:
        result = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=True)
    finally:
        opened, _OPENED = _OPENED, None
    inside = [p for p in opened if Path(p).resolve().parent == cwd or cwd in Path(p).resolve().parents]
    assert not inside, f"read outside the given inputs: {inside}"
    assert SECRET not in result.output
    return result


def assert_user_error(result, contains: str = "") -> str:
    """Exit 2, nothing on stdout, exactly one ``onnxdual: error:`` line on stderr, no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxdual: error: "), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert contains in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    """y = relu([x0 + x1, x0 - x1]) on a (N, 2) input."""
    w = np.array([[1.0, 1.0], [1.0, -1.0]], np.float32)
    nodes = [helper.make_node("Gemm", ["input", "W"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["output"])]
    return make_model(nodes, [2], [2], {"W": w}).SerializeToString()


@pytest.fixture
def net(decoys, model_bytes) -> Path:
    path = decoys[1] / "net.onnx"
    path.write_bytes(model_bytes)
    return path


def prop(decoys, text: str, name: str = "p.vnnlib") -> Path:
    path = decoys[1] / name
    path.write_text(text)
    return path


def verify(decoys, net, query, *extra):
    return invoke(decoys, "verify", query, "--network", net, "--timeout", "20", *extra)


# ------------------------------------------------------------------------------------------ A. files

def test_a_property_holding_a_path_is_parsed_as_text(decoys, net):
    for content in ("secret.txt", str(decoys[0] / "p.vnnlib"), "/etc/passwd"):
        assert_user_error(verify(decoys, net, prop(decoys, content + "\n")), "unexpected token")


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "directory"])
def test_non_regular_models_properties_and_data_are_refused(decoys, net, kind):
    path = {"fifo": decoys[1] / "fifo", "/dev/zero": Path("/dev/zero"), "directory": decoys[1]}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    good = prop(decoys, V1)
    assert_user_error(verify(decoys, path, good))
    assert_user_error(verify(decoys, net, path))
    assert_user_error(invoke(decoys, "certify", net, "--data", path, "--limit", "1"))


@pytest.mark.parametrize("option", ["--expected", "--baseline"])
def test_bench_refuses_non_regular_ground_truth_files(decoys, net, option):
    (decoys[1] / "instances.csv").write_text("net.onnx,p.vnnlib,5\n")
    prop(decoys, V1)
    fifo = decoys[1] / "fifo.csv"
    os.mkfifo(fifo)
    assert_user_error(invoke(decoys, "bench", decoys[1], option, fifo, "--out", decoys[1] / "out"),
                      "not a regular file")


def test_external_data_comes_from_the_model_folder_never_the_cwd(decoys, model_bytes, monkeypatch):
    model = onnx.load_model_from_string(model_bytes)
    folder = decoys[1] / "model"
    folder.mkdir()
    with monkeypatch.context() as m:  # onnx.save looks for an existing data file in the cwd (the decoy)
        m.chdir(folder)
        onnx.save(model, "m.onnx", save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    good = prop(decoys, V1)
    result = verify(decoys, folder / "m.onnx", good)
    assert result.exit_code == 0 and result.stdout == "unsat\n", result.output
    (folder / "m.onnx.data").unlink()  # now only the decoy in the cwd has that name
    assert_user_error(verify(decoys, folder / "m.onnx", good), "not found")
    for location in ("../../cwd/m.onnx.data", str(decoys[0] / "w.bin")):
        stripped = onnx.load(str(folder / "m.onnx"), load_external_data=False)
        for entry in stripped.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        onnx.save(stripped, str(folder / "evil.onnx"))
        assert_user_error(verify(decoys, folder / "evil.onnx", good), "leaves the folder")


def test_a_decompression_bomb_is_refused_with_the_limit(decoys):
    bomb = decoys[1] / "bomb.onnx.gz"
    bomb.write_bytes(gzip.compress(b"\0" * (8 << 20)))
    line = assert_user_error(verify(decoys, bomb, prop(decoys, V1)))
    assert "decompresses to more than" not in line  # 8 MiB is within the default 1 GiB: a parse error
    line = assert_user_error(invoke(decoys, "verify", prop(decoys, V1), "--network", bomb,
                                    env={MAX_DECOMPRESSED_ENV: str(1 << 20)}), "more than 1048576 bytes")
    assert "batch-size" not in line


@pytest.mark.parametrize("stage", ["../inputs/net.onnx", "/etc/hostname", "sub/../../net.onnx", "a\0b.onnx"])
def test_cascade_stages_stay_inside_the_manifest_folder(decoys, net, stage):
    folder = decoys[1] / "cascade"
    folder.mkdir()
    manifest = folder / "cascade.json"
    manifest.write_text(json.dumps({"format": "onnxdual-cascade", "version": 1, "stages": [{"onnx": stage}]}))
    assert_user_error(invoke(decoys, "certify", manifest, "--limit", "1", "--out", decoys[1] / "out"))
    assert not (decoys[1] / "out").exists() or not any((decoys[1] / "out").iterdir())


def test_an_explicit_option_accepts_stages_outside(decoys, net):
    folder = decoys[1] / "cascade"
    folder.mkdir()
    manifest = folder / "cascade.json"
    manifest.write_text(json.dumps({"format": "onnxdual-cascade", "version": 1,
                                    "stages": [{"onnx": "../net.onnx"}]}))
    data = decoys[1] / "data.npz"
    np.savez(data, x=np.array([[0.2, 0.7]], np.float32), y=np.array([0]))
    out = decoys[1] / "out"
    assert_user_error(invoke(decoys, "certify", manifest, "--data", data, "--out", out), "leaves the folder")
    result = invoke(decoys, "certify", manifest, "--allow-stages-outside", "--data", data, "--out", out,
                    "--quiet")
    assert result.exit_code == 0, result.output
    assert (out / "summary.json").exists()


def test_bench_never_copies_a_listed_file_into_its_results(decoys, net):
    csv = decoys[1] / "instances.csv"
    secret = os.path.relpath(decoys[0] / "secret.txt", decoys[1])
    csv.write_text(f"net.onnx,{secret},5\nnet.onnx,../cwd/p.vnnlib,5\n")
    out = decoys[1] / "bench-out"
    global _OPENED
    _OPENED = []
    try:  # the instances name files in the decoy directory: reading them is what the user asked
        result = CliRunner().invoke(cli, ["bench", str(csv), "--out", str(out), "--quiet"])
    finally:
        _OPENED = None
    assert result.exit_code == 0, result.output
    for name in ("results.csv", "report.html", "summary.json"):
        assert SECRET not in (out / name).read_text()


# -------------------------------------------------------------------------------------- D. nesting

def _nested(kind: str, depth: int) -> str:
    if kind == "and":
        return HEAD + BOX + "(assert " + "(and " * depth + "(>= Y_0 1.0)" + ")" * depth + ")\n"
    if kind == "not":
        return HEAD + BOX + "(assert " + "(not " * depth + "(>= Y_0 1.0)" + ")" * depth + ")\n"
    if kind == "+":
        return HEAD + BOX + "(assert (>= Y_0 " + "(+ " * depth + "1" + " 1)" * depth + "))\n"
    return BOX_QUERY.format(t="Real") + "(assert " + "(and " * depth + "(>= Y[0,0] 1.0)" + ")" * depth + ")\n"


@pytest.mark.parametrize("kind", ["and", "not", "+", "2.0"])
@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_properties_are_refused(decoys, net, kind, depth):
    assert_user_error(verify(decoys, net, prop(decoys, _nested(kind, depth))), "nested too deeply")


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a":' * 5_000 + "1" + "}" * 5_000])
def test_deeply_nested_manifests_are_refused(decoys, text):
    manifest = decoys[1] / "cascade.json"
    manifest.write_text(text)
    assert_user_error(invoke(decoys, "certify", manifest, "--limit", "1"), "nested too deeply")


def test_run_instance_sh_survives_a_deep_2_0_query(decoys, net, tmp_path):
    """Through the VNN-COMP script, as a real process: 'error' in the results file and a clear message,
    never exit 139 (the reference parser's segfault)."""
    query = prop(decoys, _nested("2.0", 100_000))
    results = tmp_path / "results.txt"
    env = {**os.environ, "ONNXDUAL_PYTHON": sys.executable}
    script = str(REPO / "vnncomp" / "run_instance.sh")
    done = subprocess.run(["bash", script, "v1", "fuzz", str(net), str(query), str(results), "30"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr
    assert results.read_text() == "error\n"
    assert "nested too deeply" in done.stderr and "Traceback" not in done.stderr


# -------------------------------------------------------------------------- H. plain user mistakes

@pytest.mark.parametrize("args", [
    ("verify", "{p}", "--network", "{net}", "--seed", str(2**70)),
    ("verify", "{p}", "--network", "{net}", "--seed", "-1"),
    ("certify", "{net}", "--seed", str(2**64)),
    ("bench", "{inputs}", "--seed", str(2**64)),
    ("verify", "{p}", "--network", "{net}", "--bogus"),
    ("verify",),
    ("nosuchcommand",),
    ("certify", "{net}", "--batch-size", "0"),
    ("verify", "{p}", "--network", "{net}", "--timeout", "abc"),
])
def test_usage_errors_are_one_line(decoys, net, args):
    p = prop(decoys, V1)
    filled = [a.format(p=p, net=net, inputs=decoys[1]) for a in args]
    assert_user_error(invoke(decoys, *filled))


@pytest.mark.parametrize("where", ["network", "query", "out", "data"])
def test_nul_bytes_and_long_names_in_paths_are_refused(decoys, net, where):
    good = prop(decoys, V1)
    for bad in (str(decoys[1] / "a\0b"), str(decoys[1] / ("x" * 300))):
        if where == "network":
            args = ("verify", good, "--network", bad)
        elif where == "query":
            args = ("verify", bad, "--network", net)
        elif where == "out":
            args = ("certify", net, "--limit", "1", "--out", bad)
        else:
            args = ("certify", net, "--data", bad)
        assert_user_error(invoke(decoys, *args))


@pytest.mark.parametrize("text,contains", [
    ("", "no VNN-LIB commands"), ("; nothing\n", "no VNN-LIB commands"),
    ("  \n\n;;\n", "no VNN-LIB commands"),
    (BOX_QUERY.format(t="Banana"), "unknown element type 'Banana'"),
    (BOX_QUERY.format(t="Real").replace("100.0", "1e999999999"), "out of range"),
    (HEAD + BOX + "(assert (>= Y_0 1e999999999))\n", "non-finite"),
])
def test_plain_property_mistakes_get_a_clear_line(decoys, net, text, contains):
    line = assert_user_error(verify(decoys, net, prop(decoys, text)), contains)
    assert "out of memory" not in line


# ------------------------------------------------------------------------------------ generated inputs

_POOL = ["(", ")", " and ", " or ", " not ", " + ", " - ", " * ", " / ", " <= ", " >= ", " = ", " X_0 ",
         " Y_1 ",
         " X_7 ", " 1e999 ", " nan ", " -0 ", "(assert ", "(declare-const Z Real)", ";", '"', "|", "\n", "[",
         " Banana ", "(declare-network g ", "(declare-input X float32 [2])", " != ", " secret.txt "]


def _mutate(data: st.DataObject, text: str) -> str:
    import re

    pieces = re.findall(r"\s+|[()]|[^\s()]+", text)
    for _ in range(data.draw(st.integers(1, 4))):
        k = data.draw(st.integers(0, len(pieces) - 1))
        op = data.draw(st.sampled_from(["delete", "insert", "replace", "duplicate"]))
        if op == "delete":
            del pieces[k]
        elif op == "duplicate":
            pieces[k:k] = pieces[k:k + data.draw(st.integers(1, 8))]
        else:
            piece = data.draw(st.sampled_from(_POOL) | st.text(max_size=4))
            pieces[k:k + (op == "replace")] = [piece]
    return "".join(pieces)


@FUZZ
@given(data=st.data(), base=st.sampled_from([V1, V2]))
def test_mutated_properties_parse_or_raise_one_spec_error(data, base):
    text = _mutate(data, base)
    try:
        parse_vnnlib_text(text, name="fuzz.vnnlib")
    except SpecError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.vnnlib")


@FUZZ
@given(parts=st.lists(st.sampled_from(list("()XY_0123456789.e-+<=>; \n\"|") + ["and ", "assert ", "X_0 ",
                                                                               "declare-const "]),
                      max_size=200))
def test_token_soup_parses_or_raises_one_spec_error(parts):
    text = "".join(parts)
    try:
        parse_vnnlib_text(text, name="fuzz.vnnlib")
    except SpecError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=max(10, EXAMPLES // 4), deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_properties_through_verify_answer_or_fail_in_one_line(decoys, net, data):
    text = _mutate(data, V1)
    result = verify(decoys, net, prop(decoys, text), "--timeout", "5")
    if result.exit_code == 0:
        assert result.stdout.splitlines()[0] in ("sat", "unsat", "unknown", "timed-out")
    else:
        assert_user_error(result)


@settings(max_examples=max(10, EXAMPLES // 2), deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_malformed_onnx_is_one_line(decoys, model_bytes, data):
    kind = data.draw(st.sampled_from(["truncate", "flip", "random", "empty", "gzip-truncate"]))
    raw = bytearray(model_bytes)
    if kind == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    elif kind == "random":
        raw = bytearray(data.draw(st.binary(max_size=512)))
    elif kind == "empty":
        raw = bytearray()
    else:
        packed = gzip.compress(bytes(raw))
        raw = bytearray(packed[:data.draw(st.integers(2, len(packed) - 1))])
    path = decoys[1] / "fuzz.onnx"
    path.write_bytes(bytes(raw))
    result = verify(decoys, path, prop(decoys, V1), "--timeout", "5")
    if result.exit_code == 0:  # a flip that left a valid model: it was decided
        assert result.stdout.splitlines()[0] in ("sat", "unsat", "unknown", "timed-out")
    else:
        assert_user_error(result)


@settings(max_examples=max(10, EXAMPLES // 2), deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12),
       stages=st.booleans())
def test_malformed_manifests_are_one_line(decoys, doc, stages):
    manifest = decoys[1] / "cascade.json"
    body = {"format": "onnxdual-cascade", "version": 1, "stages": doc} if stages else doc
    manifest.write_text(json.dumps(body))
    assert_user_error(invoke(decoys, "certify", manifest, "--limit", "1"))


# ----------------------------------------------------------------------------------- real processes

def _onnxdual(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "onnxdual_cli.main", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


def test_a_real_process_prints_one_line_and_no_library_warnings(decoys, net):
    done = _onnxdual("verify", prop(decoys, BOX_QUERY.format(t="Banana")), "--network", net,
                     env={"PYTHONWARNINGS": "", "ONNXDUAL_DEBUG": ""}, cwd=decoys[0])
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()] and done.stderr.startswith("onnxdual: error:")


def test_ctrl_c_during_start_up_imports_is_one_line(tmp_path):
    """KeyboardInterrupt raised by the import of torch (where a Ctrl-C at start-up lands), deterministic."""
    script = ("import sys\n"
              "class Interrupt:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name == 'torch':\n"
              "            raise KeyboardInterrupt\n"
              "sys.meta_path.insert(0, Interrupt())\n"
              "sys.argv = ['onnxdual', 'certify']\n"  # the command itself imports torch (its --help does not)
              "from onnxdual_cli.main import main\n"
              "main()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 130 and done.stderr == "onnxdual: interrupted\n", done.stderr

