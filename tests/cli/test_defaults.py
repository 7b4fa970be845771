"""One set of defaults (issue 16, point 3): the Python API and every command read onnxdual.defaults, every
``--help`` states each option's default, ``--threads`` / ``--json`` / ``--config`` exist on every command that
runs work, old spellings still work with one deprecation line, and the one-line warnings where a run would not
do what its options seem to ask."""

from __future__ import annotations

import dataclasses

import click
import pytest
from click.testing import CliRunner
from onnxdual_cli.bench import bench_command
from onnxdual_cli.certify import certify_command
from onnxdual_cli.main import cli
from onnxdual_cli.options import parse_clip, parse_projections
from onnxdual_cli.train import parse_options, train_command
from onnxdual_cli.verify import verify_command

from onnxdual import defaults
from onnxdual.certify import CertifySettings
from onnxdual.training.config import TrainConfig
from tests.cli.test_train_cli import tiny  # noqa: F401  (the fixture)

COMMANDS = {"certify": certify_command, "train": train_command, "verify": verify_command, "bench": bench_command}


def _defaults(command: click.Command) -> dict:
    return {p.name: p.default for p in command.params}


def _field_defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def test_certify_api_and_cli_share_every_default():
    cli_d, api = _defaults(certify_command), _field_defaults(CertifySettings)
    assert parse_clip(cli_d["clip_text"]) == api["clip"] == defaults.CLIP == (0.0, 1.0)
    assert parse_projections(cli_d["projections_text"]) == api["projections"] == defaults.PROJECTIONS
    assert float(cli_d["eps_text"]) == defaults.EPS
    for name in ("norm", "batch_size", "pgd_steps", "pgd_restarts", "seed", "relaxation", "time_budget"):
        assert cli_d[name] == api[name], name
    assert cli_d["delta"] is None and api["probable"] is None  # exact bounds unless asked


def test_train_api_and_cli_share_every_default(tiny, tmp_path):  # noqa: F811
    _, data = tiny
    ctx = train_command.make_context("train", ["--data", str(data), "--out", str(tmp_path / "o")])
    config, opts = parse_options(ctx.params)
    reference = TrainConfig(eps=defaults.EPS)
    assert config == dataclasses.replace(reference, device=opts.device)
    assert config.clip == defaults.CLIP and config.proj == defaults.TRAIN_PROJECTIONS
    assert opts.pgd_steps == defaults.PGD_STEPS and opts.threads is None


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_help_states_every_default(name):
    """Every option that takes a value says its default (or that it is required) in --help; flags are off
    unless given."""
    command = COMMANDS[name]
    ctx = click.Context(command, info_name=name)
    missing = []
    for p in command.params:
        if not isinstance(p, click.Option) or p.hidden or p.is_flag or p.name == "help":
            continue
        record = p.get_help_record(ctx)
        if record is None or not ("default:" in record[1] or "[required]" in record[1]):
            missing.append(p.opts[0])
    assert not missing, f"'onnxdual {name} --help' does not state the default of {missing}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_threads_json_and_config_exist_on_every_command(name):
    text = CliRunner().invoke(cli, [name, "--help"], terminal_width=200).output
    for option in ("--threads N|auto", "--json", "--config FILE", "[default: auto]"):
        assert option in text, (name, option)


def test_old_proj_spelling_still_works_with_one_warning(tiny, tmp_path, capsys):  # noqa: F811
    _, data = tiny
    base = ["--data", str(data), "--out", str(tmp_path / "o")]
    new, _ = parse_options(train_command.make_context("train", [*base, "--projections", "7"]).params)
    assert capsys.readouterr().err == ""
    old, _ = parse_options(train_command.make_context("train", [*base, "--proj", "7"]).params)
    assert old == new and old.proj == 7
    assert capsys.readouterr().err.splitlines() == ["onnxdual: warning: --proj is deprecated; use --projections"]
    result = CliRunner().invoke(train_command, [*base, "--proj", "7", "--projections", "9"])
    assert result.exit_code == 2 and result.output.splitlines()[-1] == \
        "onnxdual: error: give --projections or its old spelling --proj, not both"
    assert "--proj " not in CliRunner().invoke(train_command, ["--help"]).output  # hidden: one name in help


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("onnxdual: warning:")]


def test_train_warns_when_the_ramp_is_longer_than_the_run(tiny, tmp_path, capsys):  # noqa: F811
    _, data = tiny
    base = ["--data", str(data), "--out", str(tmp_path / "o"), "--eps", "0.1"]
    parse_options(train_command.make_context("train", [*base, "--epochs", "5", "--ramp-epochs", "20"]).params)
    assert _warnings(capsys.readouterr().err) == [
        "onnxdual: warning: --epochs 5 is shorter than --ramp-epochs 20: training stops at 25% of the eps ramp "
        "and never trains at --eps 0.1"]
    parse_options(train_command.make_context("train", [*base, "--epochs", "20", "--ramp-epochs", "20"]).params)
    assert _warnings(capsys.readouterr().err) == []


def test_train_warns_when_l2_drops_an_explicit_clip(tiny, tmp_path, capsys):  # noqa: F811
    _, data = tiny
    base = ["--data", str(data), "--out", str(tmp_path / "o"), "--norm", "l2"]
    ctx = train_command.make_context("train", [*base, "--clip", "0,1"])
    with ctx:
        config, _ = parse_options(ctx.params)
    assert config.effective_clip is None
    assert _warnings(capsys.readouterr().err) == [
        "onnxdual: warning: --clip 0,1 is ignored with --norm l2 (only l-inf balls are intersected with the "
        "data domain)"]
    ctx = train_command.make_context("train", base)  # the default domain: nothing to warn about
    with ctx:
        parse_options(ctx.params)
    assert _warnings(capsys.readouterr().err) == []


@pytest.mark.parametrize("extra,warned", [(["--clip", "0,1"], True), ([], False), (["--clip", "none"], False)])
def test_certify_warns_when_l2_drops_an_explicit_clip(tmp_path, extra, warned):
    result = CliRunner().invoke(cli, ["certify", "--norm", "l2", "--eps", "0.5", "--limit", "2", "--pgd-steps",
                                      "1", "--quiet", "--threads", "1", "--out", str(tmp_path / "r"), *extra])
    assert result.exit_code == 0, result.output
    expected = ["onnxdual: warning: --clip 0,1 is ignored with --norm l2 (only l-inf balls are intersected with "
                "the data domain)"] if warned else []
    assert _warnings(result.stderr) == expected


def test_train_help_says_data_is_required_and_its_absence_is_one_line(tmp_path):
    assert "[required]" in CliRunner().invoke(train_command, ["--help"], terminal_width=200).output
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.splitlines() == ["onnxdual: error: --data is required: an MNIST/CIFAR-10 directory or "
                                          "a .npz file with x and y"]


@pytest.mark.parametrize("text", ["0", "-2", "many"])
def test_bad_threads_are_one_line_errors(text, tmp_path):
    result = CliRunner().invoke(cli, ["certify", "--threads", text, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1
    assert result.output.startswith("onnxdual: error: --threads")
