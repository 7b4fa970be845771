"""Fault injection on the output writes (issue 17 B): a kill (SIGKILL) at every rename, fsync, mkdir,
unlink and link the report writer makes, and injected I/O errors, leave the report directory holding the
previous report whole or the new one whole, never a mix; a killed ``certify --out DIR`` leaves the earlier
report in DIR intact. Kill points are counted syscalls (strace ``when=N``), never timers."""

from __future__ import annotations

import os
import signal

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import helper

from onnxdual.errors import OutputBusyError
from onnxdual.files import write_files_atomically
from onnxdual.reports import REPORT_FILES, write_certify_report
from onnxdual_cli.main import cli
from tests.onnx_builders import make_model
from tests.reports.synthetic import make_meta, make_results
from tests.strace_faults import Injected, kill_points, require_strace, run_injected

pytestmark = [pytest.mark.usefixtures("one_thread")]

#: every syscall the set writer makes on the file system (Python's os.replace is rename, the swap renameat2)
WRITER_SYSCALLS = ["mkdir", "write", "fsync", "linkat", "chmod", "rename", "renameat2", "unlinkat", "rmdir"]
WRITER_ERRORS = {"mkdir": "ENOSPC", "write": "ENOSPC", "fsync": "EIO", "linkat": "EMLINK", "renameat2": "EIO"}


def _report(seed: int):
    examples, summary, _ = make_results(n=3 + seed, eps=(0.1,), stages=1, seed=seed)
    return examples, summary, make_meta(model=f"run {seed}")


def _contents(out) -> dict[str, bytes]:
    """The report files in ``out`` (what a reader sees); hidden leftovers are listed apart."""
    return {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}


def test_killed_or_failing_report_writes_leave_one_whole_report(tmp_path):
    require_strace()
    out = tmp_path / "report"
    # rendered once: the trials exercise the writer (write_certify_report ends in write_files_atomically)
    for name, seed in (("old", 1), ("new", 2)):
        write_certify_report(tmp_path / name, *_report(seed))
        (tmp_path / name / "notes.txt").write_text("mine")  # a user's file, carried over by every write
    expected_old, expected_new = _contents(tmp_path / "old"), _contents(tmp_path / "new")
    report_new = {k: v for k, v in expected_new.items() if k != "notes.txt"}

    def reset():
        write_files_atomically(out, expected_old)  # also removes what a killed child left (dead pid)

    def check(rule, n, outcome):
        seen = _contents(out)
        assert seen in (expected_old, expected_new), f"{rule}:when={n} (outcome {outcome}) left a mix"
        if outcome == 0:
            assert seen == expected_new, f"{rule}:when={n}: the write succeeded but the report is the old one"
        elif outcome == 2:
            assert seen == expected_old, f"{rule}:when={n}: a failed write changed the report"
        else:
            assert outcome == -9, f"{rule}:when={n}: unexpected outcome {outcome}"

    tried = kill_points(lambda: write_files_atomically(out, report_new), WRITER_SYSCALLS, check, reset,
                        WRITER_ERRORS)
    kills = [t for t in tried if t[2] == -9]
    errors = [t for t in tried if t[2] == 2]
    assert len(kills) >= 12 and len(errors) >= 6, tried  # the walk really hit the writer's calls
    write_files_atomically(out, report_new)  # the next write cleans every leftover of the killed children
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old", "report"]
    assert _contents(out) == expected_new and not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(8, 16)).astype(np.float32), rng.normal(size=(3, 8)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["input"], ["f"]),
             helper.make_node("Gemm", ["f", "W1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2"], ["output"], transB=1)]
    onnx.save(make_model(nodes, [1, 4, 4], [3], {"W1": w1, "W2": w2}), str(tmp / "m.onnx"))
    x = rng.uniform(0, 1, size=(5, 1, 4, 4)).astype(np.float32)
    np.savez(tmp / "d.npz", x=x, y=np.zeros(5, np.int64))
    return tmp / "m.onnx", tmp / "d.npz"


def test_sigkill_during_certify_leaves_the_earlier_report_intact(tiny, tmp_path):
    require_strace()
    model, data = tiny
    out = tmp_path / "DIR"

    def certify(eps: str):
        # --no-resume: each trial starts afresh instead of refusing the progress a killed trial left
        result = CliRunner().invoke(cli, ["certify", str(model), "--data", str(data), "--eps", eps, "--out",
                                          str(out), "--pgd-steps", "2", "--no-resume"])
        if result.exit_code != 0:
            raise SystemExit(result.exit_code)
        return result

    def report(out) -> dict[str, bytes]:  # a killed run keeps its progress file (for --resume) next to it
        return {k: v for k, v in _contents(out).items() if k != "certify-progress.jsonl"}

    assert "replaced" not in certify("0.01").output
    earlier = _contents(out)
    assert set(earlier) == set(REPORT_FILES.values()) | {"config.yaml"}  # the resolved options next to it
    for rule in ("renameat2:signal=SIGKILL:when=1", "fsync:signal=SIGKILL:when=3",
                 "mkdir:signal=SIGKILL:when=1", "unlinkat:signal=SIGKILL:when=1"):
        assert run_injected(lambda: certify("0.02"), rule) == -9, rule
        assert report(out) == earlier, rule
    torch.manual_seed(0)
    result = certify("0.02")
    assert f"onnxdual: replaced the previous report in {out}" in result.output
    assert _contents(out) != earlier and set(_contents(out)) == set(earlier)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR"]


def test_a_second_writer_of_a_locked_report_directory_fails_instead_of_interleaving(tmp_path):
    require_strace()
    out = tmp_path / "report"
    first, second = _report(1), _report(2)
    write_certify_report(out, *first)
    before = _contents(out)
    # the first writer stops (SIGSTOP, a counted event) at its first fsync, so once its staging directory
    # exists it holds the directory's lock until it is continued
    holder = Injected(lambda: write_certify_report(out, *second), "fsync:signal=SIGSTOP:when=1")
    try:
        holder.wait_until(lambda: any(tmp_path.glob(f".report.onnxdual-new.{holder.pid}.*")))
        with pytest.raises(OutputBusyError, match="another onnxdual run is writing"):
            write_certify_report(out, *_report(3))
        assert _contents(out) == before
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    assert holder.wait() == 0
    write_certify_report(tmp_path / "expected", *second)
    assert _contents(out) == _contents(tmp_path / "expected")
