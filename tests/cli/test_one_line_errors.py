"""onnxdual_cli.errors beyond library errors: click's usage errors are one line (OneLineGroup), path
arguments are checked before a command runs, and "lower --batch-size" is said only where batched
computation ran out of memory."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from onnxdual_cli.errors import OneLineGroup, user_errors


@click.group(cls=OneLineGroup)
def group():
    pass


@group.command()
@click.option("--batch-size", type=click.IntRange(min=1), default=10)
@click.option("--out", type=click.Path(path_type=Path), default=Path("out"))
@click.argument("what")
@user_errors
def work(batch_size, out, what):
    if what == "compute":
        raise MemoryError()  # raised here, outside onnxdual's readers: batched compute
    if what == "read":
        from onnxdual.specs import parse_vnnlib_text, vnnlib1

        def exhausted(text, name):
            raise MemoryError()

        vnnlib1.parse_vnnlib1, saved = exhausted, vnnlib1.parse_vnnlib1
        try:
            parse_vnnlib_text("(assert true)")
        finally:
            vnnlib1.parse_vnnlib1 = saved
    click.echo("ok")


@group.command()
@user_errors
def plain():
    raise MemoryError()


def one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxdual: error: "), result.stderr
    return lines[0]


def test_usage_errors_are_one_line_naming_the_help():
    line = one_line(CliRunner().invoke(group, ["work", "x", "--batch-size", "0"]))
    assert "--batch-size" in line and "work --help" in line
    assert "Usage:" not in line
    one_line(CliRunner().invoke(group, ["work"]))
    one_line(CliRunner().invoke(group, ["nope"]))


def test_help_and_success_keep_exit_0():
    assert CliRunner().invoke(group, ["--help"]).exit_code == 0
    assert CliRunner().invoke(group, ["work", "x"]).stdout == "ok\n"


def test_nul_bytes_and_over_long_names_are_user_errors():
    assert "NUL" in one_line(CliRunner().invoke(group, ["work", "x", "--out", "a\0b"]))
    assert "too long" in one_line(CliRunner().invoke(group, ["work", "x", "--out", "d/" + "x" * 256]))


def test_the_batch_size_hint_only_for_batched_compute():
    assert "lower --batch-size" in one_line(CliRunner().invoke(group, ["work", "compute"]))
    line = one_line(CliRunner().invoke(group, ["work", "read"]))
    assert "reading the inputs" in line and "batch-size" not in line
    line = one_line(CliRunner().invoke(group, ["plain"]))
    assert line.startswith("onnxdual: error: out of memory") and "batch-size" not in line
