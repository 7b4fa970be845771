"""Turn every expected failure into one clear line on stderr and exit code 2 (never a traceback).

An unexpected exception is a bug in onnxdual or in a plugin: it is reported as one ``internal error`` line
with exit code 1; ``ONNXDUAL_DEBUG=1`` shows the traceback instead."""

from __future__ import annotations

import functools
import os
import sys

import click

from onnxdual.errors import OnnxDualError

USER_ERROR = 2
INTERNAL_ERROR = 1
#: a certified example was broken by an attack: a bug in onnxdual or a plugin (certify, train)
SOUNDNESS_VIOLATION = 3


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
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get("ONNXDUAL_DEBUG") == "1":
                raise
            where = ""
            tb = exc.__traceback__
            while tb is not None:  # the innermost frame names the culprit (onnxdual or a plugin)
                where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
                tb = tb.tb_next
            message = (str(exc).splitlines() or [""])[0][:300]
            click.echo(f"onnxdual: internal error: {type(exc).__name__}: {message}{where}; please report it "
                       "(ONNXDUAL_DEBUG=1 shows the traceback)", err=True)
            sys.exit(INTERNAL_ERROR)

    return wrapper
