"""Options and value parsers shared by the commands, defined once: device selection, threads, eps, the data
domain (clip), random projections, the verifier's search options, deprecated spellings and one-line
warnings. Defaults come from :mod:`onnxdual.defaults` (the same as the Python API's). Each parser raises
:class:`~onnxdual_cli.errors.UserError` (one ``onnxdual: error:`` line, exit 2) on a bad value."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import click

from onnxdual import defaults
from onnxdual_cli.errors import UserError

DEVICES = ("auto", "cpu", "cuda")
#: the largest --seed (torch and numpy take 64-bit seeds; training checks the same limit)
MAX_SEED = 2**63 - 1

#: ``--seed``: a non-negative integer up to :data:`MAX_SEED` (larger ones overflowed inside torch)
seed_option = click.option("--seed", type=click.IntRange(0, MAX_SEED), default=defaults.SEED, show_default=True,
                           help=f"Random seed (0 to {MAX_SEED}).")


def device_option(default: str = "auto"):
    """``--device auto|cpu|cuda`` (auto: CUDA when there is one)."""
    return click.option("--device", type=click.Choice(DEVICES), default=default, show_default=True,
                        help="auto: CUDA when present (under torchrun: one GPU per process), else the CPU.")


def pick_device(name: str):
    """The torch device for ``--device NAME`` (:func:`onnxdual.distributed.resolve_device`, the one rule);
    ``cuda`` without a CUDA device is a user error."""
    from onnxdual.distributed import resolve_device
    from onnxdual.errors import InvalidInputError

    try:
        return resolve_device(name)
    except InvalidInputError as exc:
        raise UserError(f"--device {name}: {exc}") from None


def warn(message: str) -> None:
    """One ``onnxdual: warning: ...`` line on stderr (the run goes on)."""
    click.echo(f"onnxdual: warning: {message}", err=True)


def given(ctx: click.Context, name: str) -> bool:
    """Whether parameter ``name`` was set by the user (command line, environment or ``--config``), not left
    at its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source not in (click.core.ParameterSource.DEFAULT,)


def threads_option(auto: str):
    """``--threads N|auto`` (:data:`onnxdual.defaults.THREADS`); ``auto`` means what ``auto`` says for the
    command."""
    return click.option("--threads", "threads_text", default=defaults.THREADS, show_default=True,
                        metavar="N|auto", callback=lambda ctx, param, value: parse_threads(value),
                        help=f"CPU threads for torch; auto: {auto}.")


def parse_threads(text: str | int | None) -> int | None:
    """``auto`` (``None``: the command decides) or a positive number of threads."""
    if text is None or str(text).strip().lower() == "auto":
        return None
    try:
        value = int(str(text))
    except ValueError:
        raise UserError(f"--threads {text!r}: give a positive number of threads or 'auto'") from None
    if value < 1:
        raise UserError(f"--threads must be at least 1 (or 'auto'), got {value}")
    return value


def setup_torch(threads: int | None, device: str):
    """Use ``threads`` CPU threads (``None``: torch's default, all cores) and return the device for
    ``--device``."""
    import torch

    if threads is not None:
        torch.set_num_threads(max(1, threads))
    return pick_device(device)


def deprecated_alias(old: str, new: str):
    """A hidden, deprecated spelling ``old`` of option ``new``: still accepted with a one-line warning; its
    value arrives as parameter ``deprecated_<old>`` and :func:`take_alias` picks it up."""

    def remember(_ctx: click.Context, _param, value):
        if value is not None:
            warn(f"{old} is deprecated; use {new}")
        return value

    return click.option(old, alias_dest(old), hidden=True, default=None, callback=remember)


def alias_dest(old: str) -> str:
    """The parameter name under which :func:`deprecated_alias` ``old`` delivers its value."""
    return "deprecated_" + old.lstrip("-").replace("-", "_")


def take_alias(params: Mapping[str, Any], dest: str, old: str, new: str, default: Any) -> tuple[Any, str]:
    """``(value, spelling)`` of option ``new`` (parameter ``dest``) or of its deprecated spelling ``old``;
    both with different values is a user error."""
    value = params.get(alias_dest(old))
    if value is None:
        return params[dest], new
    if params[dest] != default and params[dest] != value:
        raise UserError(f"give {new} or its old spelling {old}, not both")
    return value, old


def parse_eps(text: str, what: str = "--eps") -> float:
    """One positive, finite radius."""
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{what} {text!r} is not a number (e.g. {what} 0.1)") from None
    if not (value > 0 and math.isfinite(value)):
        raise UserError(f"{what} must be positive and finite, got {text}")
    return value


def parse_eps_list(text: str, what: str = "--eps") -> tuple[float, ...]:
    """A comma-separated list of positive, finite radii (``0.05,0.1``)."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            float(part)
        except ValueError:
            raise UserError(f"{what} {part!r} is not a number (use e.g. {what} 0.1 or {what} 0.05,0.1)") from None
        values.append(parse_eps(part, what))
    return tuple(values)


def parse_clip(text: str, what: str = "--clip") -> tuple[float, float] | None:
    """The data domain ``lo,hi`` (finite, ``lo <= hi``), or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{what} {text!r}: give two numbers 'lo,hi' (e.g. 0,1) or 'none'") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise UserError(f"{what} {text!r}: the range must be finite")
    if lo > hi:
        raise UserError(f"{what} {text!r}: empty range {lo:g} > {hi:g}")
    return lo, hi


def parse_projections(text: str, what: str = "--projections") -> tuple[int, int]:
    """``k,m``: two positive integers."""
    try:
        k, m = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{what} {text!r}: give two positive integers 'k,m' (e.g. 200,10)") from None
    if k < 1 or m < 1:
        raise UserError(f"{what} {text!r}: k and m must be positive")
    return k, m


#: how the verifier searches where bounds and attacks do not decide at once (verify, bench, vnncomp)
split_option = click.option(
    "--split-max-inputs", type=click.IntRange(min=0), default=defaults.SPLIT_MAX_INPUTS, show_default=True,
    help="Split input boxes when at most this many inputs are perturbed (otherwise split ReLUs).")
relu_option = click.option(
    "--no-relu-splits", "no_relu_splits", is_flag=True,
    help="Do not branch on ReLUs: answer unknown where bounds and attacks do not decide.")


def relaxation_option(default: str, auto: bool = False):
    """``--relaxation``: how activations are relaxed for exact bounds (``auto``: certify picks)."""
    choices = (["auto"] if auto else []) + ["paper", "adaptive", "optimized"]
    return click.option(
        "--relaxation", type=click.Choice(choices), default=default, show_default=True,
        help="Relaxation of the activations: paper (the paper's same-slope dual), adaptive (separate "
             "faces, CROWN's slopes) or optimized (slopes optimised for the bound; tightest, slowest)"
             + ("; auto: the tightest whose measured cost fits --time-budget." if auto else "."))


def search_options(fn):
    """``--split-max-inputs`` and ``--no-relu-splits``."""
    return split_option(relu_option(fn))
