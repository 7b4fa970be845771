"""Start-up (issue 12, point 4): ``onnxdual --help`` / ``--version`` and ``import onnxdual`` import neither torch
nor onnx, onnxruntime, onnx2torch, pandas or matplotlib (checked in a fresh interpreter; the times are in
benchmarks/startup/bench_startup.py, not here); the lazy command list says what the commands' own docstrings
say; the package's public names still resolve."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from onnxdual_cli.main import COMMANDS, cli, load_command

import onnxdual

HEAVY = ("torch", "onnx", "onnxruntime", "onnx2torch", "pandas", "matplotlib", "jinja2", "scipy")


def heavy_modules_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = (f"import sys\n{code}\nimport json\n"
             f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["--name"]])
def test_top_level_help_imports_nothing_heavy(args):
    code = ("from onnxdual_cli.main import cli\n"
            f"try:\n    cli({args!r}, prog_name='onnxdual')\nexcept SystemExit:\n    pass")
    assert heavy_modules_after(code) == []


@pytest.mark.parametrize("module", ["onnxdual", "onnxdual.errors", "onnxdual.defaults", "onnxdual_cli.config",
                                    "onnxdual_cli.options"])
def test_light_modules_import_nothing_heavy(module):
    assert heavy_modules_after(f"import {module}") == []


def test_help_lists_every_visible_command_without_loading_it():
    # a fresh copy of the group: other tests in this process may have loaded commands into ``cli``
    fresh = copy.copy(cli)
    fresh.commands = {k: v for k, v in cli.commands.items() if k not in COMMANDS}
    text = CliRunner().invoke(fresh, ["--help"], terminal_width=200).output
    for name, (_, hint) in COMMANDS.items():
        if hint is None:
            assert f"  {name} " not in text  # hidden
        else:
            assert f"  {name} " in text and hint in text, name
    assert "  ops " in text and "  plugins-guide " in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_listed_help_is_the_commands_own(name):
    command = load_command(name)
    hint = COMMANDS[name][1]
    assert command.hidden == (hint is None)
    if hint is not None:  # the first sentence(s) of the docstring, word for word
        assert " ".join((command.help or "").split()).startswith(hint), (name, hint)


def test_a_lazy_command_runs_through_the_group():
    result = CliRunner().invoke(cli, ["supports", "--vnnlib-versions"])
    assert result.exit_code == 0 and result.output.split() == ["1.0", "2.0"]
    assert CliRunner().invoke(cli, ["nope"]).exit_code == 2


def test_the_package_names_resolve_lazily():
    assert callable(onnxdual.load) and onnxdual.DualNetwork.__name__ == "DualNetwork"
    assert set(onnxdual.__all__) <= set(dir(onnxdual))
    for name in onnxdual.__all__:
        assert getattr(onnxdual, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        onnxdual.nope  # noqa: B018
