"""Turn every expected failure into one clear line on stderr and exit code 2 (never a traceback)."""

from __future__ import annotations

import functools
import sys

import click

from onnxdual.errors import OnnxDualError

USER_ERROR = 2


class UserError(click.ClickException):
    exit_code = USER_ERROR

    def show(self, file=None) -> None:
        click.echo(f"onnxdual: error: {self.format_message()}", err=True)


def user_errors(fn):
    """Decorator for commands: library errors become :class:`UserError`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OnnxDualError as exc:
            raise UserError(str(exc)) from exc
        except KeyboardInterrupt:
            click.echo("onnxdual: interrupted", err=True)
            sys.exit(130)
        except MemoryError as exc:
            raise UserError("out of memory; lower --batch-size or use a smaller model") from exc

    return wrapper
