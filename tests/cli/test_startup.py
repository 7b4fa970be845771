"""Start-up (issue 12, point 4): ``onnxdual --help`` / ``--version``, ``supports``, the commands' own
``--help`` and ``import onnxdual`` import neither torch nor onnx, onnxruntime, onnx2torch, pandas or
matplotlib, and a ``verify`` run imports what it needs (torch, onnx, onnx2torch, onnxruntime) and none of the
report libraries (checked in a fresh interpreter; the times are in benchmarks/startup/bench_startup.py, not
here); the lazy command list says what the commands' own docstrings say; the package's public names still
resolve."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from onnxdual_cli.main import COMMANDS, cli, load_command

import onnxdual

HEAVY = ("torch", "onnx", "onnxruntime", "onnx2torch", "pandas", "matplotlib", "jinja2", "scipy")


ROOT = Path(__file__).resolve().parents[2]


def heavy_modules_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = (f"import sys\n{code}\nimport json\n"
             f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    # ONNXDUAL_SLOW_EXIT: verify ends a real process with os._exit, before the probe could print
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env=dict(os.environ, ONNXDUAL_SLOW_EXIT="1"))
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli_code(args: list[str]) -> str:
    return ("from onnxdual_cli.main import cli\n"
            f"try:\n    cli({args!r}, prog_name='onnxdual')\nexcept SystemExit:\n    pass")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["--name"], ["ops"], ["supports"],
                                  ["supports", "--onnx-operators"], ["supports", "--vnnlib-versions"],
                                  ["verify", "--help"], ["certify", "--help"], ["bench", "--help"]])
def test_help_and_supports_import_nothing_heavy(args):
    assert heavy_modules_after(cli_code(args)) == []


def test_the_opset_range_needs_onnx_only():
    # the range is the installed onnx's newest opset; torch and onnx2torch (frontend.convert) are not needed
    assert heavy_modules_after(cli_code(["supports", "--onnx-opset-versions"])) == ["onnx"]


def tiny_verify_instance(folder: Path, op: str = "Gemm") -> tuple[Path, Path]:
    """y = [relu(x0 + x1), relu(x0 - x1)] (a Gemm or a MatMul) and ``y0 >= 1.5`` on the unit square."""
    import numpy as np
    import onnx
    from onnx import helper

    from tests.onnx_builders import make_model

    w = np.array([[1.0, 1.0], [1.0, -1.0]], np.float32)  # symmetric: the same map as Gemm(transB) and MatMul
    product = (helper.make_node("Gemm", ["input", "W"], ["h"], transB=1) if op == "Gemm"
               else helper.make_node("MatMul", ["input", "W"], ["h"]))
    nodes = [product, helper.make_node("Relu", ["h"], ["output"])]
    net = folder / "net.onnx"
    onnx.save(make_model(nodes, [2], [2], {"W": w}), str(net))
    prop = folder / "prop.vnnlib"
    prop.write_text("".join(f"(declare-const {v} Real)\n" for v in ("X_0", "X_1", "Y_0", "Y_1"))
                    + "".join(f"(assert (>= {v} 0.0))\n(assert (<= {v} 1.0))\n" for v in ("X_0", "X_1"))
                    + "(assert (>= Y_0 1.5))\n")
    return net, prop


def verify_code(net: Path, prop: Path) -> str:
    """``onnxdual verify`` in the probe's process, asserting ``sat``."""
    return ("import contextlib, io\nout = io.StringIO()\nwith contextlib.redirect_stdout(out):\n    "
            + cli_code(["verify", str(prop), "--network", str(net), "--threads", "1"]).replace("\n", "\n    ")
            + "\nassert out.getvalue().startswith('sat'), out.getvalue()")


def test_verify_imports_what_it_needs_and_no_report_library(tmp_path):
    # sat: the witness (1, 1) -> y0 = 2 is confirmed by onnxruntime, so every library verify can need is in
    net, prop = tiny_verify_instance(tmp_path)
    assert heavy_modules_after(verify_code(net, prop)) == ["onnx", "onnx2torch", "onnxruntime", "torch"]


def test_verify_of_a_matmul_network_does_not_import_sympy(tmp_path):
    """The generic vector-Jacobian product (torch.autograd.grad with grad_outputs) imports sympy through its
    shape check, ~0.6 s of CPU before the first bound; MatMul with a constant matrix transposes directly."""
    net, prop = tiny_verify_instance(tmp_path, "MatMul")
    probe = verify_code(net, prop) + "\nimport sys\nassert 'sympy' not in sys.modules, 'sympy imported'"
    assert heavy_modules_after(probe) == ["onnx", "onnx2torch", "onnxruntime", "torch"]


def test_the_installed_ml_dtypes_is_one_pyproject_allows():
    """onnx imports ml_dtypes at its own import; 0.7.0 spends ~0.9 s of CPU there (numpy loop registration),
    more than a third of verify's start-up: pyproject.toml keeps it out, and an environment that drifted
    from the pin would silently pay it (benchmarks/startup/results/startup.md)."""
    tomllib = pytest.importorskip("tomllib")
    from importlib import metadata

    Requirement = pytest.importorskip("packaging.requirements").Requirement  # onnxruntime depends on it

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin, = (Requirement(d) for d in dependencies if Requirement(d).name.replace("-", "_") == "ml_dtypes")
    assert pin.specifier.contains(metadata.version("ml_dtypes")), (metadata.version("ml_dtypes"), str(pin))


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
