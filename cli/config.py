"""``--config FILE``: a command's options from a TOML or YAML file, and the resolved configuration of a run.

A configuration file holds the options of one command by their long names (``pgd-steps = 40`` or
``pgd_steps: 40``; arguments such as ``model`` too), flat or under a table named after the command
(``[certify]``), so that one file can serve certify, train, verify and bench; paths are relative to the
current directory, as on the command line, and ``~`` is expanded. Options given on the command line
override the file: the file's values become click's ``default_map``, which is exactly what click consults
before an option's own default. An unknown key or a bad value is one ``onnxdual: error:`` line (exit 2).

Every run writes the configuration it resolved (:data:`RESOLVED`: every option's final value, from wherever it
came) next to its output, through the one atomic writer (:func:`onnxdual.files.atomic_write`), so that
``onnxdual <command> --config OUT/config.yaml`` runs it again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from onnxdual_cli.errors import UserError

#: the resolved configuration written next to a run's output
RESOLVED = "config.yaml"
#: the commands that take ``--config`` (a table named after one of them holds that command's options)
COMMANDS = ("certify", "train", "verify", "bench")
#: parameters that are never configuration (they do not change what a run computes or writes)
_NOT_CONFIG = {"help", "config_file"}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def command_name(ctx: click.Context) -> str:
    """``train`` for ``onnxdual train`` (and for ``python -m onnxdual_cli.train``, named "onnxdual train")."""
    return (ctx.info_name or "").split(" ")[-1]


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file; any problem is a :class:`UserError`."""
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise UserError(f"--config {path}: give a .toml, .yaml or .yml file (or .json)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--config {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10: the same parser, as a package (pyproject.toml)
                import tomli as tomllib

            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - each parser has its own error type; all mean "not valid"
        kind = {".toml": "TOML", ".json": "JSON"}.get(suffix, "YAML")
        raise UserError(f"--config {path}: not valid {kind}: {_one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a table of option = value, got a {type(data).__name__}")
    return data


def _keys(param: click.Parameter) -> list[str]:
    """The names a file may use for ``param``: its long option names (or the argument's name), with
    ``-`` or ``_``."""
    if isinstance(param, click.Argument):
        names = [param.name or ""]
    else:
        names = [o.lstrip("-") for o in param.opts + param.secondary_opts if o.startswith("--")]
    return [n.replace("_", "-") for n in names if n]


def key_of(param: click.Parameter) -> str:
    """The name a resolved configuration uses for ``param`` (its first long option name)."""
    return _keys(param)[0]


def _cli_value(param: click.Parameter, key: str, value: Any, where: str) -> Any:
    """A value from the file, in the form the command line would give it (lists of numbers as ``a,b``)."""
    is_flag = isinstance(param, click.Option) and param.is_flag
    if isinstance(value, bool) and not is_flag:
        raise UserError(f"{where}: {key} takes a value, not {str(value).lower()}")
    if isinstance(value, dict):
        raise UserError(f"{where}: {key} takes a value, not a table")
    if param.multiple or (param.nargs != 1):
        values = value if isinstance(value, (list, tuple)) else [value]
        return [os.path.expanduser(str(v)) if isinstance(param.type, click.Path) else str(v) for v in values]
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (list, tuple, dict)) for v in value):
            raise UserError(f"{where}: {key}: give a list of numbers or words")
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return value
    # a path in a file is not seen by a shell: expand ~ as the shell would have (relative paths stay relative
    # to the current directory, as on the command line)
    return os.path.expanduser(str(value)) if isinstance(param.type, click.Path) else str(value)


def load_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    """``--config`` callback (eager, so it runs before every other option): check the file against the
    command's parameters and install it as ``ctx.default_map``."""
    if value is None or ctx.resilient_parsing:
        return value
    data = read_config_file(value)
    command = command_name(ctx)
    section = data.get(command)
    flat = {k: v for k, v in data.items() if not (k in COMMANDS and isinstance(v, dict))}
    if isinstance(section, dict):
        flat.update(section)
    params = {key: p for p in ctx.command.params if p.name not in _NOT_CONFIG for key in _keys(p)}
    where = f"--config {value}"
    default_map: dict[str, Any] = {}
    for raw_key, raw in flat.items():
        key = str(raw_key).replace("_", "-")
        param = params.get(key)
        if param is None:
            known = ", ".join(sorted({key_of(p) for p in params.values() if not getattr(p, "hidden", False)}))
            raise UserError(f"{where}: unknown key {raw_key!r} for 'onnxdual {command}' (known: {known})")
        if raw is None:  # null: the option's own default
            continue
        cli_value = _cli_value(param, key, raw, where)
        try:
            param.type_cast_value(ctx, cli_value)
        except click.BadParameter as exc:
            raise UserError(f"{where}: {key}: {_one_line(exc.format_message())}") from None
        default_map[param.name or key] = cli_value
    ctx.default_map = {**(ctx.default_map or {}), **default_map}
    ctx.meta["onnxdual.config"] = value
    return value


def config_option(fn):
    """``--config FILE`` (see the module docstring)."""
    return click.option(
        "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
        default=None, is_eager=True, expose_value=False, callback=load_config,
        help="Read options from a TOML or YAML file (keys: the long option names, flat or under "
             "[<command>]); options on the command line override it. [default: none]")(fn)


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def resolved_config(ctx: click.Context, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every option of the running command with its final value, by long name (``params``: the values by
    parameter name; default: ``ctx.params``). Values keep the command line's form, so the result is a valid
    ``--config`` for the same command."""
    values = ctx.params if params is None else params
    out: dict[str, Any] = {}
    for p in ctx.command.params:
        if p.name in _NOT_CONFIG or getattr(p, "hidden", False) or not p.expose_value or p.name not in values:
            continue
        out[key_of(p)] = _plain(values[p.name])
    return out


def config_text(ctx: click.Context, params: Mapping[str, Any] | None = None, path: str = RESOLVED) -> str:
    """The resolved configuration as YAML, with a header that says what it is, where it came from and how to
    run it again (``path``: where it is written)."""
    import yaml

    import onnxdual

    source = ctx.meta.get("onnxdual.config")
    header = (f"# onnxdual {onnxdual.__version__}: the resolved configuration of this run of "
              f"'{ctx.command_path}'" + (f" (read from {source}, command-line options applied)" if source else "")
              + f".\n# Run it again with: {ctx.command_path} --config {path}\n")
    return header + yaml.safe_dump({command_name(ctx): resolved_config(ctx, params)}, sort_keys=False,
                                   allow_unicode=True)


def write_resolved(out_dir: Path, ctx: click.Context | None = None,
                   params: Mapping[str, Any] | None = None) -> Path:
    """Write :data:`RESOLVED` into ``out_dir`` (all or nothing) and return its path."""
    from onnxdual.files import atomic_write

    ctx = ctx or click.get_current_context()
    path = Path(out_dir) / RESOLVED
    atomic_write(path, config_text(ctx, params, str(path)))
    return path


__all__ = ["RESOLVED", "config_option", "load_config", "read_config_file", "resolved_config", "config_text",
           "write_resolved"]
