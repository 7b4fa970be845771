"""The ``onnxdual`` command: a thin click layer over the library (``onnxdual/``)."""

from __future__ import annotations

import os
import sys

try:  # Ctrl-C during the start-up imports (torch takes a while) is one line, not a 40-line traceback
    import json

    import click

    from onnxdual_cli.errors import OneLineGroup, quiet_warnings, user_errors

    if __name__ == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") == "onnxdual":
        quiet_warnings()  # as the command, before torch and numpy are imported (their import-time warnings)
    import onnxdual
    from onnxdual import registry
    from onnxdual_cli.certify import certify_command
    from onnxdual_cli.train import train_command
    from onnxdual_cli.verify import supports_command, verify_command, vnncomp_command, vnncomp_prepare_command
    from onnxdual_cli.bench import bench_command
except KeyboardInterrupt:
    sys.stderr.write("onnxdual: interrupted\n")
    raise SystemExit(130) from None

NAME = "onnxdual"


def _print_name(ctx: click.Context, _param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(NAME)
        ctx.exit()


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


cli.add_command(certify_command, name="certify")
cli.add_command(train_command, name="train")
cli.add_command(verify_command, name="verify")
cli.add_command(supports_command, name="supports")
cli.add_command(bench_command, name="bench")
cli.add_command(vnncomp_command, name="vnncomp")
cli.add_command(vnncomp_prepare_command, name="vnncomp-prepare")


def main() -> None:
    cli(prog_name=NAME)


if __name__ == "__main__":
    main()
