"""The ``onnxdual`` command: a thin click layer over the library (``onnxdual/``).

Start-up is lazy: a command's module -- and torch, onnx, onnxruntime, pandas with it -- is imported only when
that command runs or shows its own help (:class:`LazyGroup`), so ``onnxdual --help``, ``--version`` and
``ops`` answer at once (benchmarks/startup/bench_startup.py)."""

from __future__ import annotations

import os
import sys

try:  # Ctrl-C during the start-up imports (torch takes a while) is one line, not a 40-line traceback
    import json

    import click

    from onnxdual_cli.errors import OneLineGroup, quiet_warnings, user_errors

    if __name__ == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") == "onnxdual":
        quiet_warnings()  # as the command, before torch and numpy are imported (their import-time warnings)
    import importlib

    import onnxdual
except KeyboardInterrupt:
    sys.stderr.write("onnxdual: interrupted\n")
    raise SystemExit(130) from None

NAME = "onnxdual"

#: every command kept in its own module: name -> ("module:attribute", the one-line help ``onnxdual --help``
#: lists without importing it: the first sentence of the command's docstring, tests/cli/test_startup.py), or
#: no help for a hidden command
COMMANDS: dict[str, tuple[str, str | None]] = {
    "certify": ("onnxdual_cli.certify:certify_command",
                "Certify MODEL (an ONNX file or a cascade manifest .json) against perturbations of size --eps."),
    "train": ("onnxdual_cli.train:train_command",
              "Robustly train MODEL (an ONNX file) or a built-in --arch on --data, then certify it."),
    "verify": ("onnxdual_cli.verify:verify_command",
               "Decide the VNN-LIB QUERY (1.0 or 2.0; .gz accepted): is there an input of the networks that "
               "satisfies every assertion?"),
    "supports": ("onnxdual_cli.verify:supports_command",
                 "Report a capability (VNN-LIB 2.0, chapter 5), e.g. 'onnxdual supports --onnx-operators'."),
    "bench": ("onnxdual_cli.bench:bench_command",
              "Decide every instance of SOURCE (a folder with instances.csv, or a CSV of onnx,vnnlib,timeout "
              "rows)."),
    "vnncomp": ("onnxdual_cli.verify:vnncomp_command", None),
    "vnncomp-prepare": ("onnxdual_cli.verify:vnncomp_prepare_command", None),
}


def load_command(name: str) -> click.Command:
    """Import the command ``name`` of :data:`COMMANDS`."""
    module, _, attribute = COMMANDS[name][0].partition(":")
    return getattr(importlib.import_module(module), attribute)


class LazyGroup(OneLineGroup):
    """A group whose :data:`COMMANDS` are imported on first use; its own ``--help`` lists them from their
    one-line helps."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            try:
                command = load_command(cmd_name)
            except KeyboardInterrupt:  # Ctrl-C in the command's imports (torch): one line, not click's blank one
                sys.stderr.write("onnxdual: interrupted\n")
                raise SystemExit(130) from None
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in COMMANDS and name not in self.commands:
                hint = COMMANDS[name][1]
                if hint is not None:
                    rows.append((name, hint))
                continue
            command = self.commands[name]
            if not command.hidden:
                rows.append((name, command.get_short_help_str(10**6)))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, _shorten(text, limit)) for name, text in rows])


def _shorten(text: str, limit: int) -> str:
    """``text`` cut at a word to at most ``limit`` characters (as click shortens a command's help)."""
    if len(text) <= limit:
        return text
    cut = text[:max(1, limit - 3)].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "..."


def _print_name(ctx: click.Context, _param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(NAME)
        ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(onnxdual.__version__, "--version", prog_name=NAME, message="%(version)s")
@click.option("--name", is_flag=True, expose_value=False, is_eager=True, callback=_print_name,
              help="Print the tool's name and exit.")
def cli() -> None:
    """Provable robustness for ONNX networks (Wong et al. 2018 dual networks)."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--markdown", is_flag=True, help="Print a Markdown support matrix.")
@user_errors
def ops(as_json: bool, markdown: bool) -> None:
    """List every ONNX operator with a dual layer, and who provides it."""
    from onnxdual import registry

    rows = [{"op": str(key), "dual_layer": entry.target, "provider": entry.distribution,
             "version": entry.version} for key, entry in sorted(registry.find_duals().items())]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if markdown:
        click.echo("| operator | dual layer | provided by |\n|---|---|---|")
        for r in rows:
            click.echo(f"| {r['op']} | `{r['dual_layer']}` | {r['provider']} {r['version']} |")
        return
    width = max(len(r["op"]) for r in rows)
    dual_width = max(len(r["dual_layer"]) for r in rows)
    for r in rows:
        click.echo(f"{r['op']:<{width}}  {r['dual_layer']:<{dual_width}}  {r['provider']} {r['version']}")


@cli.command("plugins-guide")
@user_errors
def plugins_guide() -> None:
    """Print the guide to writing a dual-layer plugin (shipped with the package)."""
    from importlib import resources

    click.echo(resources.files("onnxdual").joinpath("assets", "plugin_guide.md").read_text(encoding="utf-8"))



def main() -> None:
    cli(prog_name=NAME)


if __name__ == "__main__":
    main()
