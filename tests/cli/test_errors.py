"""onnxdual_cli.errors: library errors are one line and exit 2; a bug is one 'internal error' line naming
where it happened, exit 1, and ONNXDUAL_DEBUG=1 brings the traceback back."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from onnxdual.errors import InvalidInputError
from onnxdual_cli.errors import INTERNAL_ERROR, USER_ERROR, UserError, user_errors


@click.command()
@click.argument("kind")
@user_errors
def failing(kind):
    if kind == "user":
        raise InvalidInputError("eps must be positive")
    if kind == "usage":
        raise UserError("bad option")
    if kind == "bug":
        raise RuntimeError("cannot reshape tensor\nsecond line")
    click.echo("ok")


def test_library_errors_are_one_line_and_exit_2():
    result = CliRunner().invoke(failing, ["user"])
    assert result.exit_code == USER_ERROR
    assert result.stderr.strip() == "onnxdual: error: eps must be positive"
    assert CliRunner().invoke(failing, ["usage"]).exit_code == USER_ERROR


def test_a_bug_is_one_internal_error_line(monkeypatch):
    monkeypatch.delenv("ONNXDUAL_DEBUG", raising=False)
    result = CliRunner().invoke(failing, ["bug"])
    assert result.exit_code == INTERNAL_ERROR
    err = result.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("onnxdual: internal error: RuntimeError: cannot reshape tensor at test_errors.py:")
    assert "ONNXDUAL_DEBUG=1" in err


def test_debug_mode_keeps_the_traceback(monkeypatch):
    monkeypatch.setenv("ONNXDUAL_DEBUG", "1")
    with pytest.raises(RuntimeError, match="cannot reshape"):
        CliRunner().invoke(failing, ["bug"], catch_exceptions=False)
    assert CliRunner().invoke(failing, ["fine"]).output == "ok\n"
