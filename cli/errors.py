"""Turn every expected failure into one clear line on stderr and exit code 2 (never a traceback).

An unexpected exception is a bug in onnxdual or in a plugin: it is reported as one ``internal error`` line
with exit code 1; ``ONNXDUAL_DEBUG=1`` shows the traceback instead. Click's own usage errors (a bad option
value, a missing argument) get the same one line (:class:`OneLineErrors`), paths are checked before a
command runs (:func:`check_paths`), and library warnings are kept off stderr (:func:`quiet_warnings`)."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path

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


#: the longest file name and path the commands accept (Linux NAME_MAX / PATH_MAX, in bytes)
NAME_MAX, PATH_MAX = 255, 4096
#: where onnxdual reads its inputs: memory running out there is not a matter of --batch-size
_READING = ("onnxdual/frontend/", "onnxdual/specs/", "onnxdual/inputfiles.py", "onnxdual/data.py",
            "onnxdual/certify/manifest.py")


def quiet_warnings() -> None:
    """Keep library warnings (torch, numpy, onnx2torch) off stderr, where the promise is verdicts and one
    error line; ``ONNXDUAL_DEBUG=1`` or ``python -W`` / ``PYTHONWARNINGS`` show them."""
    if not sys.warnoptions and os.environ.get("ONNXDUAL_DEBUG") != "1":
        warnings.simplefilter("ignore")


def _option_name(ctx: click.Context | None, name: str) -> str:
    for param in ctx.command.params if ctx is not None else ():
        if param.name == name:
            return "/".join(param.opts) if isinstance(param, click.Option) else param.human_readable_name
    return name


def check_paths(kwargs: dict) -> None:
    """Refuse, as a user error, a path argument the operating system cannot take: a NUL byte, a name
    longer than :data:`NAME_MAX` bytes, a path longer than :data:`PATH_MAX` (instead of an internal
    ``ValueError``/``OSError`` from deep inside a command)."""
    ctx = click.get_current_context(silent=True)
    for name, value in kwargs.items():
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if isinstance(v, str) and "\0" in v or isinstance(v, Path) and "\0" in str(v):
                raise UserError(f"{_option_name(ctx, name)}: {str(v)!r} contains a NUL byte")
            if not isinstance(v, Path):
                continue
            text = os.fsencode(v)
            if len(text) > PATH_MAX or any(len(part) > NAME_MAX for part in text.split(b"/")):
                raise UserError(f"{_option_name(ctx, name)}: the path {str(v)[:60]!r}... is too long "
                                f"(at most {NAME_MAX} bytes per name, {PATH_MAX} in all)")


def _memory_message(exc: BaseException) -> str:
    """``out of memory``, with the --batch-size hint only where batched computation ran out (a command with
    --batch-size, not while reading inputs)."""
    ctx = click.get_current_context(silent=True)
    where = ""
    tb = exc.__traceback__
    while tb is not None:  # the innermost onnxdual frame says what was running
        file = tb.tb_frame.f_code.co_filename.replace(os.sep, "/")
        if "/onnxdual/" in file:
            where = file[file.rindex("/onnxdual/") + 1:]
        tb = tb.tb_next
    batched = ctx is not None and any(p.name == "batch_size" for p in ctx.command.params)
    if where.startswith(_READING):
        return "out of memory while reading the inputs (a model, property or data file too large for this " \
               "machine)"
    if batched:
        return "out of memory; lower --batch-size or use a smaller model"
    return "out of memory (the model or the problem is too large for this machine)"


def user_errors(fn):
    """Decorator for commands: library errors become :class:`UserError`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            check_paths(kwargs)
            return fn(*args, **kwargs)
        except OnnxDualError as exc:
            raise UserError(str(exc)) from exc
        except KeyboardInterrupt:
            click.echo("onnxdual: interrupted", err=True)
            sys.exit(130)
        except MemoryError as exc:
            raise UserError(_memory_message(exc)) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get("ONNXDUAL_DEBUG") == "1":
                raise
            if type(exc).__name__ == "OutOfMemoryError" and type(exc).__module__.startswith("torch"):
                raise UserError(_memory_message(exc)) from exc  # torch.cuda.OutOfMemoryError
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


def one_line(exc: click.ClickException) -> str:
    """The ``onnxdual: error: ...`` line for a click exception (a usage error names the --help to read)."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return f"onnxdual: error: {message}"


class OneLineErrors:
    """Mixin for the top-level click group: in standalone mode every :class:`click.ClickException` (usage
    errors included, which click prints as ``Usage:`` / ``Try ...`` / ``Error: ...``) becomes one
    ``onnxdual: error:`` line with its exit code (2), and Ctrl-C while parsing is one line too."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        bad = [a for a in (sys.argv[1:] if args is None else args) if "\0" in str(a)]
        if bad:  # click's path checks would raise ValueError (argv cannot hold NUL; a caller's list can)
            click.echo(f"onnxdual: error: argument {bad[0]!r} contains a NUL byte", err=True)
            sys.exit(USER_ERROR)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            click.echo(one_line(exc), err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("onnxdual: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


class OneLineGroup(OneLineErrors, click.Group):
    """A :class:`click.Group` whose errors are one line (:class:`OneLineErrors`)."""
