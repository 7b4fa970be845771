"""``--config FILE`` (issue 16, point 6): TOML and YAML files for certify, train, verify and bench, the command
line overriding them, one-line errors (exit 2) for unknown keys, bad values and broken files, the resolved
``config.yaml`` next to every output (and that it runs the same thing again), and ``train --tensorboard``."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from click.testing import CliRunner
from onnxdual_cli import tensorboard
from onnxdual_cli.main import cli
from onnxdual_cli.train import parse_options, train_command

from tests.cli.test_bench_cli import folder  # noqa: F401  (the fixture)
from tests.cli.test_train_cli import FAST, tiny  # noqa: F401  (the fixture)
from tests.cli.test_verify_cli import net, query  # noqa: F401  (the fixture)

CERTIFY = ["certify", "--limit", "3", "--pgd-steps", "1", "--threads", "1"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, *parts):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxdual: error: --config "), lines
    for part in parts:
        assert part in lines[0], (part, lines[0])


def summary_rows(out):
    rows = json.loads((out / "summary.json").read_text())["summary"]
    return [{k: v for k, v in r.items() if "second" not in k} for r in rows]


def test_certify_reads_toml_flags_override_and_writes_the_resolved_config(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('limit = 9\n[certify]\neps = [0.02, 0.05]\npgd_steps = 1\nquiet = true\n'
                      '[train]\nepochs = 3\n')  # another command's table is not certify's business
    result = invoke(*CERTIFY, "--config", config, "--eps", "0.05", "--out", tmp_path / "r1")
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load((tmp_path / "r1" / "config.yaml").read_text())["certify"]
    assert resolved["eps"] == "0.05" and resolved["limit"] == 3 and resolved["quiet"] is True  # flags win
    assert resolved["clip"] == "0,1" and resolved["pgd-steps"] == 1 and resolved["threads"] == 1
    assert [r["eps"] for r in summary_rows(tmp_path / "r1")] == [0.05]
    again = invoke("certify", "--config", tmp_path / "r1" / "config.yaml", "--out", tmp_path / "r2")
    assert again.exit_code == 0, again.output
    assert summary_rows(tmp_path / "r2") == summary_rows(tmp_path / "r1")
    assert yaml.safe_load((tmp_path / "r2" / "config.yaml").read_text())["certify"] == {**resolved,
                                                                                        "out": str(tmp_path / "r2")}


def test_certify_reads_yaml(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("certify:\n  eps: 0.05\n  limit: 2\n  pgd-steps: 1\n  json: true\n")
    result = invoke("certify", "--config", config, "--threads", "1", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["summary"][0]["n"] == 2 and printed["files"]["config"] == str(tmp_path / "r" / "config.yaml")


@pytest.mark.parametrize("name,text,parts", [
    ("a.toml", "epz = 0.1\n", ["unknown key 'epz' for 'onnxdual certify'", "known: ", "pgd-steps"]),
    ("a.toml", "limit = -3\n", ["limit:", "-3 is not in the range"]),
    ("a.toml", "norm = 'l3'\n", ["norm:", "'l3' is not one of"]),
    ("a.toml", "limit = true\n", ["limit takes a value, not true"]),
    ("a.toml", "quiet = 'maybe'\n", ["quiet:", "'maybe' is not a valid boolean"]),
    ("a.toml", "[certify]\nclip = {lo = 0}\n", ["clip takes a value, not a table"]),
    ("a.toml", "limit = [\n", ["not valid TOML"]),
    ("a.yaml", "limit: [\n", ["not valid YAML"]),
    ("a.yaml", "- 1\n- 2\n", ["expected a table of option = value, got a list"]),
    ("a.ini", "limit=1\n", ["give a .toml, .yaml or .yml file"]),
])
def test_config_errors_are_one_line_before_any_work(tmp_path, name, text, parts):
    config = tmp_path / name
    config.write_text(text)
    one_line_error(invoke("certify", "--config", config, "--out", tmp_path / "r"), *parts)
    assert not (tmp_path / "r").exists()


def test_missing_config_file_is_one_line(tmp_path):
    result = invoke("certify", "--config", tmp_path / "nope.toml")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "nope.toml" in result.output and "does not exist" in result.output


def test_train_config_reaches_the_training_config_and_flags_override(tiny, tmp_path, monkeypatch):  # noqa: F811
    _, data = tiny
    monkeypatch.setenv("HOME", str(data.parent))  # ~ in a file is expanded as a shell would
    config = tmp_path / "train.toml"
    config.write_text(f'[train]\ndata = "~/{data.name}"\neps = 0.2\nepochs = 7\nramp-epochs = 3\nprojections = "exact"\n'
                      'clip = "none"\nnormalize = "0.5:0.25"\n')
    ctx = train_command.make_context("train", ["--config", str(config), "--epochs", "9"])
    train, opts = parse_options(ctx.params)
    assert (train.eps, train.epochs, train.ramp_epochs, train.proj, train.clip) == (0.2, 9, 3, None, None)
    assert train.normalize == ((0.5,), (0.25,)) and opts.data == data


def test_train_writes_the_resolved_config_json_and_tensorboard_scalars(tiny, tmp_path, monkeypatch):  # noqa: F811
    model, data = tiny
    logged: list[tuple[str, float, int]] = []

    class Recorder:  # stands in for torch's SummaryWriter (the tensorboard package is an optional extra)
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            logged.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            logged.append(("closed", 0.0, 0))

    monkeypatch.setattr(tensorboard, "summary_writer_class", lambda: Recorder)
    out = tmp_path / "run"
    args = [model, "--data", data, "--eps", "0.05", *FAST, "--epochs", "2", "--limit", "40", "--out", out,
            "--tensorboard", tmp_path / "tb", "--json"]
    result = CliRunner().invoke(train_command, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["trained"]["epoch"] == 2 and printed["test"]["n"] == 10
    assert printed["files"]["config"] == str(out / "config.yaml")
    resolved = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert resolved["epochs"] == 2 and resolved["projections"] == "exact" and resolved["tensorboard"] == str(
        tmp_path / "tb")
    steps = [s for tag, _, s in logged if tag == "step/robust_loss"]
    assert steps == [1, 2, 3, 4]  # 40 examples / batch 20 = 2 steps per epoch, numbered across epochs
    assert [s for tag, _, s in logged if tag == "epoch/robust_loss"] == [1, 2]
    assert {"epoch/clean_err", "epoch/lr", "step/eps"} <= {tag for tag, _, _ in logged}
    assert logged[-1][0] == "closed"


def test_train_tensorboard_without_the_package_is_one_line(tiny, tmp_path, monkeypatch):  # noqa: F811
    model, data = tiny
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    result = CliRunner().invoke(train_command, [str(model), "--data", str(data), "--out", str(tmp_path / "o"),
                                                "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "onnxdual: error: --tensorboard needs the tensorboard package: pip install 'onnxdual[tensorboard]' "
        "(or pip install tensorboard)"]
    assert not (tmp_path / "o").exists()


def test_verify_takes_query_and_networks_from_yaml_and_answers_json(net, tmp_path):  # noqa: F811
    q = query(tmp_path, 1.5)  # reachable: sat
    config = tmp_path / "v.yaml"
    config.write_text(f"verify:\n  query: {q}\n  network: ['N={net}']\n  timeout: 30\n  threads: 1\n")
    result = invoke("verify", "--config", config, "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["answer"] == "sat" and answer["assignment"].startswith("X Real [1,2]\n")
    assert answer["config"]["network"] == [f"N={net}"] and answer["config"]["timeout"] == 30.0
    out = tmp_path / "witness"
    result = invoke("verify", "--config", config, "--serialise-assignments", out)
    assert result.exit_code == 0 and result.stdout.splitlines() == ["sat"], result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["verify"]["serialise-assignments"] == str(out)
    bad = tmp_path / "bad.yaml"
    bad.write_text("verify:\n  timeout: soon\n")
    result = invoke("verify", "--config", bad, q)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output


def test_bench_config_json_and_resolved_config(folder, tmp_path):  # noqa: F811
    config = tmp_path / "bench.toml"
    config.write_text(f'[bench]\nsource = "{folder}"\nfilter = "net.onnx"\nexpected = "{folder / "expected.csv"}"\n')
    out = tmp_path / "b"
    result = invoke("bench", "--config", config, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["summary"][-1]["correct"] == 2 and printed["unsound"] == 0
    resolved = yaml.safe_load((out / "config.yaml").read_text())["bench"]
    assert resolved["filter"] == "net.onnx" and resolved["threads"] is None and resolved["out"] == str(out)
