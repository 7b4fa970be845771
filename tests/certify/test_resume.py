"""An interrupted certification continues from its progress file and ends with the result an uninterrupted run
gets, value for value (records, per-stage records, thumbnails, the relaxation); the interruption is a counting
hook (the k-th batch raises), never a timer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import onnxdual
import onnxdual.certify.run as run_module
from onnxdual.certify.journal import Journal
from onnxdual.certify.run import CertifySettings, Stage, certify
from tests.milp_oracle import random_dense


class Interrupt(Exception):
    """What the counting hook raises (a Ctrl-C arrives as KeyboardInterrupt in the same place)."""


@pytest.fixture(scope="module")
def problem():
    net = onnxdual.load(random_dense(np.random.default_rng(0), 6, [10, 10], 4).onnx_model)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(23, 6, generator=g)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[:4] = (y[:4] + 1) % 4
    settings = CertifySettings(eps=(0.02, 0.2), batch_size=5, pgd_steps=5, relaxation="adaptive", clip=(0, 1))
    stages = [Stage("a", Path("a.onnx"), net)]
    return stages, x, y, settings


def counting_stop(after: int):
    """A progress hook that raises once ``after`` batches have finished."""
    seen = []

    def hook(n):
        seen.append(n)
        if len(seen) == after:
            raise Interrupt

    return hook


def same_result(a, b):
    assert a.records == b.records
    assert a.stage_records == b.stage_records
    assert a.relaxation == b.relaxation and a.relaxation_choice == b.relaxation_choice
    assert len(a.adversarials) == len(b.adversarials)
    for p, q in zip(a.adversarials, b.adversarials):
        assert {k: v for k, v in p.items() if k not in ("input", "adversarial")} == \
               {k: v for k, v in q.items() if k not in ("input", "adversarial")}
        assert np.array_equal(p["input"], q["input"]) and np.array_equal(p["adversarial"], q["adversarial"])


@pytest.mark.parametrize("after", [1, 4, 9])
def test_a_resumed_run_equals_an_uninterrupted_one(problem, tmp_path, monkeypatch, after):
    stages, x, y, settings = problem
    whole = certify(stages, x, y, settings)
    assert whole.adversarials and len(whole.records) == 46  # thumbnails exist, so they are compared too
    path = tmp_path / "progress.jsonl"
    with pytest.raises(Interrupt), Journal(path) as journal:
        certify(stages, x, y, settings, counting_stop(after), journal=journal)
    batches = []
    real = run_module.certify_batch

    def counted(*args, **kwargs):
        batches.append(args[5])  # the batch's first index
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "certify_batch", counted)
    with Journal(path, resume=True) as journal:
        assert journal.path == path
        resumed = certify(stages, x, y, settings, journal=journal)
        assert journal.saved_examples == 46
    same_result(resumed, whole)
    assert len(batches) == 10 - after  # 5 batches per eps: the saved ones were not certified again


def test_the_saved_relaxation_choice_is_kept(problem, tmp_path, monkeypatch):
    stages, x, y, settings = problem
    auto = CertifySettings(**{**settings.__dict__, "relaxation": "auto"})
    path = tmp_path / "p.jsonl"
    with pytest.raises(Interrupt), Journal(path) as journal:
        certify(stages, x, y, auto, counting_stop(2), journal=journal)
    first = json.loads(path.read_text().splitlines()[0])["relaxation"]

    def measured_again(*args, **kwargs):
        raise AssertionError("a resumed run must not measure its relaxation again")

    monkeypatch.setattr(run_module, "choose_relaxation", measured_again)
    with Journal(path, resume=True) as journal:
        assert certify(stages, x, y, auto, journal=journal).relaxation == first


def test_a_line_cut_short_by_a_kill_is_certified_again(problem, tmp_path):
    stages, x, y, settings = problem
    whole = certify(stages, x, y, settings)
    path = tmp_path / "p.jsonl"
    with pytest.raises(Interrupt), Journal(path) as journal:
        certify(stages, x, y, settings, counting_stop(3), journal=journal)
    with path.open("a") as f:
        f.write('{"eps_index": 0, "start": 15, "recor')  # the kill came mid-line
    with Journal(path, resume=True) as journal:
        same_result(certify(stages, x, y, settings, journal=journal), whole)
    assert all(line.endswith("}") for line in path.read_text().splitlines())


def test_a_saved_run_is_never_overwritten_silently(problem, tmp_path):
    stages, x, y, settings = problem
    path = tmp_path / "p.jsonl"
    with pytest.raises(Interrupt), Journal(path) as journal:
        certify(stages, x, y, settings, counting_stop(2), journal=journal)
    saved = path.read_bytes()
    with pytest.raises(onnxdual.InvalidInputError, match="--resume"), Journal(path) as journal:
        certify(stages, x, y, settings, journal=journal)
    assert path.read_bytes() == saved
    other = CertifySettings(**{**settings.__dict__, "eps": (0.03, 0.2)})
    with pytest.raises(onnxdual.InvalidInputError, match="eps"), Journal(path, resume=True) as journal:
        certify(stages, x, y, other, journal=journal)
    with pytest.raises(onnxdual.InvalidInputError, match="data"), Journal(path, resume=True) as journal:
        certify(stages, x + 0.001, y, settings, journal=journal)
    assert path.read_bytes() == saved
    with Journal(path, resume=False) as journal:  # discards it: a fresh run
        fresh = certify(stages, x, y, other, journal=journal)
    assert {r["eps"] for r in fresh.records} == {0.03, 0.2}


def test_the_python_api_continues_from_its_progress_file(problem, tmp_path, monkeypatch):
    stages, x, y, settings = problem
    kwargs = dict(eps=[0.02, 0.2], batch_size=5, pgd_steps=5, relaxation="adaptive")
    path = tmp_path / "api.jsonl"
    whole = onnxdual.certify(stages[0].net, x, y, **kwargs)
    with pytest.raises(Interrupt):
        onnxdual.certify(stages[0].net, x, y, progress=counting_stop(6), progress_file=path, **kwargs)
    resumed = onnxdual.certify(stages[0].net, x, y, progress_file=path, **kwargs)
    same_result(resumed, whole)
    monkeypatch.setattr(run_module, "certify_batch", None)  # a finished file: nothing is certified again
    same_result(onnxdual.certify(stages[0].net, x, y, progress_file=path, **kwargs), whole)


def test_certify_resume_on_the_command_line(tmp_path, monkeypatch):
    import onnx
    import pandas as pd
    from click.testing import CliRunner

    from onnxdual_cli.main import cli

    onnx.save(random_dense(np.random.default_rng(0), 6, [10, 10], 4).onnx_model, str(tmp_path / "m.onnx"))
    x = np.random.default_rng(1).uniform(0, 1, size=(14, 6)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(14) % 4)

    def run(out, *more):
        return CliRunner().invoke(cli, ["certify", str(tmp_path / "m.onnx"),
                                        "--data", str(tmp_path / "d.npz"),
                                        "--eps", "0.02,0.2", "--batch-size", "4", "--pgd-steps", "3",
                                        "--relaxation", "adaptive", "--out", str(out), "--quiet", *more],
                                  catch_exceptions=False)

    assert run(tmp_path / "whole").exit_code == 0
    real, calls = run_module.certify_batch, []

    def ctrl_c_at_the_fifth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "certify_batch", ctrl_c_at_the_fifth_batch)
    stopped = run(tmp_path / "r")
    assert stopped.exit_code == 130
    message = [line for line in stopped.output.splitlines() if line.startswith("onnxdual:")]
    assert len(message) == 1 and "14 example-eps results are saved" in message[0] and "--resume" in message[0]
    assert not (tmp_path / "r" / "examples.csv").exists()
    monkeypatch.setattr(run_module, "certify_batch", real)
    refused = run(tmp_path / "r")  # neither --resume nor --no-resume: the saved work is not thrown away
    assert refused.exit_code == 2 and "--resume" in refused.output
    resumed = run(tmp_path / "r", "--resume")
    assert resumed.exit_code == 0, resumed.output
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "r" / "examples.csv"),
                                  pd.read_csv(tmp_path / "whole" / "examples.csv"))
    assert not (tmp_path / "r" / "certify-progress.jsonl").exists()
    assert run(tmp_path / "r", "--resume").exit_code == 0  # nothing to resume: a fresh run
