"""``onnxdual verify`` and ``onnxdual supports``: the VNN-LIB 2.0 solver interface (the standard's chapter
5), and the hidden ``onnxdual vnncomp`` / ``vnncomp-prepare`` commands behind the VNN-COMP scripts in
``vnncomp/``.

``verify`` prints exactly one verdict line on stdout (``sat``, ``unsat``, ``unknown`` or ``timed-out``), then
for ``sat`` the satisfying assignment in the standard's command-line format (or, with
``--serialise-assignments DIR``, one ONNX TensorProto file per variable in DIR). Everything else goes to
stderr. ``--timeout`` counts from the start of the process, so the answer arrives within it.

This module can also run on its own (``python -m onnxdual_cli.verify verify ...``), which is what the VNN-COMP
scripts do.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import click
from onnxdual_cli.config import RESOLVED, config_option, config_text, resolved_config
from onnxdual_cli.errors import OneLineGroup, UserError, quiet_warnings, user_errors
from onnxdual_cli.options import (device_option, relaxation_option, search_options, seed_option, setup_torch,
                                  split_option, threads_option)

from onnxdual import defaults

#: seconds kept back from --timeout for writing the answer and leaving the interpreter
EXIT_RESERVE = 0.4
#: parameters up to which verify and the VNN-COMP command run torch on one thread by default
SMALL_NETWORK = defaults.SMALL_NETWORK

#: the VNN-COMP checker's tolerance on a counterexample's distance outside the input box (2026 settings)
VNNCOMP_TOLERANCE = 1e-4

VERDICTS = {"sat": "sat", "unsat": "unsat", "unknown": "unknown", "timeout": "timed-out"}


def process_seconds() -> float:
    """Seconds since this process started (Linux; elsewhere since this module was imported)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 (starttime), counted after the ") state" split
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def _launched_as_cli() -> bool:
    """Whether this process was started as the onnxdual command (console script or ``python -m``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name in ("onnxdual_cli.main", "onnxdual_cli.verify"):
        return True  # python -m (argv[0] is then the source file, e.g. cli/verify.py in an editable install)
    program = Path(sys.argv[0]).as_posix() if sys.argv and sys.argv[0] else ""
    return Path(program).name == "onnxdual" or program.endswith(("onnxdual_cli/main.py",
                                                                  "onnxdual_cli/verify.py"))


def make_deadline(timeout: float | None):
    """A :class:`onnxdual.verify.Deadline` for ``timeout`` seconds counted from the process start."""
    from onnxdual.verify import Deadline

    if timeout is None:
        return Deadline(math.inf)
    # a harness times the whole process, so count from its start -- unless the command runs inside another
    # program (a test runner, a notebook): then the host's lifetime is not ours to charge
    used = process_seconds() if _launched_as_cli() else 0.0
    return Deadline(timeout - used - min(EXIT_RESERVE, 0.1 * timeout))


def parse_timeout(_ctx, _param, value):
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number of seconds")
    if not seconds > 0 or math.isnan(seconds):
        raise click.BadParameter(f"the timeout must be positive, got {value}")
    return seconds


def parse_networks(values: tuple[str, ...]) -> list[tuple[str | None, str]]:
    out = []
    for text in values:
        name, sep, path = text.partition("=")
        if sep and name and path:
            out.append((name.strip(), path))
        elif not sep:
            out.append((None, text))
        else:
            raise click.BadParameter(f"{text!r}: expected NAME=MODEL.onnx", param_hint="--network")
    return out


def log(message: str) -> None:
    click.echo(f"onnxdual: {message}", err=True)


def finish(code: int = 0) -> None:
    """End a real CLI process at once: torch and onnxruntime take ~0.5 s to tear down, which would eat into
    the time limit. (Under a test runner, where stdout is redirected, this just returns.)"""
    sys.stdout.flush()
    sys.stderr.flush()
    real = sys.stdout is sys.__stdout__ and sys.stderr is sys.__stderr__
    if real and not os.environ.get("ONNXDUAL_SLOW_EXIT"):
        os._exit(code)


def use_threads(threads: int | None, parameters: int) -> None:
    """``--threads auto`` (``None``) once the network is loaded: all cores for networks above
    :data:`SMALL_NETWORK` parameters (one property's bounds are too small to gain from threads below)."""
    if threads is None and parameters > SMALL_NETWORK:
        setup_torch(os.cpu_count() or 1, "cpu")


THREADS_AUTO = f"1 up to {SMALL_NETWORK:,} network parameters, all cores above"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.argument("query", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--network", "networks", multiple=True, metavar="NAME=MODEL.onnx",
              help="The ONNX model (.onnx or .onnx.gz) of each network the query declares. [required]")
@click.option("--timeout", callback=parse_timeout, metavar="SECONDS",
              help="Answer within this many seconds of the process start ('timed-out' if undecided). "
                   "[default: no limit]")
@click.option("--serialise-assignments", "--serialize-assignments", "--assignments", "assignments_dir",
              type=click.Path(path_type=Path, file_okay=False), default=None,
              help="For sat, write each variable as DIR/NAME.pb (ONNX TensorProto) instead of printing it, "
                   f"with {RESOLVED} (the resolved options). [default: print it]")
@click.option("--strict", is_flag=True,
              help="Refuse non-Real element types (the standard's rule for real-arithmetic solvers) and "
                   "proofs within float32 rounding of zero.")
@search_options
@relaxation_option(defaults.VERIFY_RELAXATION)
@device_option()
@threads_option(THREADS_AUTO)
@seed_option
@click.option("--verbose", "-v", is_flag=True, help="Log the steps and timings on stderr.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (answer, statistics, assignment, resolved options) instead of the "
                   "standard's lines.")
@user_errors
def verify_command(query, networks, timeout, assignments_dir, strict, split_max_inputs, no_relu_splits,
                   relaxation, device, threads_text, seed, verbose, as_json):
    """Decide the VNN-LIB QUERY (1.0 or 2.0; .gz accepted): is there an input of the networks that satisfies
    every assertion? Prints sat (with the assignment), unsat, unknown or timed-out."""
    deadline = make_deadline(timeout)
    from onnxdual.specs import (
        assignment_outputs,
        assignment_variables,
        check_io_sizes,
        declared_networks,
        detect_version,
        format_vnnlib2_assignment,
        parse_vnnlib_text,
        serialise_assignment,
    )
    from onnxdual.specs.reader import read_text
    from onnxdual.verify import Verifier, check_element_types, load_network, match_networks
    from onnxdual.verify.counterexamples import PROVEN_BY_BOUNDS

    if not networks:
        raise UserError("no network given: use --network NAME=MODEL.onnx")
    dev = setup_torch(threads_text or 1, device)
    text = read_text(query)
    declared = declared_networks(text, str(query))
    files = match_networks(declared, parse_networks(networks), str(query))
    if declared:  # condition 3 on the declared types needs no model: check it before loading anything
        check_element_types(declared, {}, strict=strict, source=str(query))
    prop = parse_vnnlib_text(text, name=str(query))  # the text as read: never opened again as a path
    if prop.joint is None:
        (name, path), = files.items()
        network = load_network(path)
        loaded = {name: network}
    else:  # several networks / tensors, hidden nodes or products: one joint network (onnxdual.specs.joint)
        network, loaded, name, path = load_joint_network(prop.joint, files)
    notes = check_element_types(declared, loaded, strict=strict, source=str(query)) if declared else []
    for note in dict.fromkeys(notes):
        log(note)
    check_io_sizes(prop, network.n_inputs, network.n_outputs, f"network {name} ({path})")
    use_threads(threads_text, sum(p.numel() for p in network.net.parameters()))
    if verbose:
        log(f"VNN-LIB {detect_version(text)}: {prop.n_cases} case(s), {prop.n_inputs} inputs, "
            f"{prop.n_outputs} outputs; {deadline.remaining():.2f}s left after loading")
    network.net.to(dev)
    verifier = Verifier.for_network(network, strict=strict, device=dev, split_max_inputs=split_max_inputs,
                                    relu_branching=not no_relu_splits, relaxation=relaxation)
    result = verifier.decide(prop, deadline, seed)
    if verbose:
        log(f"{result.answer} after {result.seconds:.2f}s ({result.boxes} boxes bounded, "
            f"{result.attack_steps} attack steps, margin {result.best_margin})")
        if result.witness_proof == PROVEN_BY_BOUNDS:
            log("the witness is a real input (the box has no float32 point): the dual bound proves that every "
                "real input around it reaches the unsafe region; the output shown is onnxruntime's at the "
                "nearest float32 input")
    ctx = click.get_current_context()
    if result.answer == "sat" and assignments_dir is not None:
        variables = assignment_variables(prop, declared)
        serialise_assignment(assignments_dir, variables, result.witness_x,
                             assignment_outputs(prop, result.witness_y))
        from onnxdual.files import atomic_write

        atomic_write(assignments_dir / RESOLVED, config_text(ctx, path=str(assignments_dir / RESOLVED)))
    if as_json:
        import json

        sat = result.answer == "sat" and assignments_dir is None
        click.echo(json.dumps({
            "answer": VERDICTS[result.answer], "seconds": round(result.seconds, 4), "boxes": result.boxes,
            "attack_steps": result.attack_steps, "best_margin": result.best_margin,
            "witness_proof": result.witness_proof,
            "assignment": format_vnnlib2_assignment(
                assignment_variables(prop, declared), result.witness_x,
                assignment_outputs(prop, result.witness_y)) if sat else None,
            "config": resolved_config(ctx)}, default=str))
        finish(0)
        return
    click.echo(VERDICTS[result.answer])
    if result.answer == "sat" and assignments_dir is None:
        click.echo(format_vnnlib2_assignment(assignment_variables(prop, declared), result.witness_x,
                                             assignment_outputs(prop, result.witness_y)))
    finish(0)


def load_joint_network(layout, files: dict[str, str]):
    """The joint network of a query (:func:`onnxdual.frontend.joint.joint_model`), loaded for the verifier
    from a temporary file; also each network's model interface (its element types, for the standard's
    checks). Returns ``(network, interfaces, name, path)`` for the messages."""
    import tempfile

    from onnxdual.frontend.joint import read_joint
    from onnxdual.verify import load_network

    data, interfaces = read_joint(layout, files)
    with tempfile.TemporaryDirectory(prefix="onnxdual-joint-") as tmp:
        path = Path(tmp) / "joint.onnx"
        path.write_bytes(data)
        network = load_network(path)
    return network, interfaces, f"joint of {', '.join(files)}", ", ".join(files.values())


# ------------------------------------------------------------------------------------------ supports

VNNLIB_RANGE = ("1.0", "2.0")


def _opsets() -> list[str]:
    """The opset range of the frontend's policy (onnxdual.frontend.opset; tests/cli/test_verify_cli.py)."""
    from onnxdual.frontend import supported_opsets

    return [str(v) for v in supported_opsets()]


def _operators() -> list[str]:
    from onnxdual import registry

    return sorted(str(key) for key in registry.find_duals())


CAPABILITIES = {
    "onnx-opset-versions": _opsets,
    "onnx-element-types": lambda: ["real"],
    "onnx-operators": _operators,
    "onnx-operators-unsat-proofs": list,
    "vnnlib-versions": lambda: list(VNNLIB_RANGE),
    # several networks, tensors, hidden nodes, linear and polynomial constraints: the joint network
    # (onnxdual.specs.joint)
    "hidden-node-theories": lambda: ["NH", "H"],
    "multiple-network-theories": lambda: ["SNET", "MNET", "MENET", "MINET"],
    "multiple-input-output-theories": lambda: ["SIO", "MIO"],
    "multiple-node-comparison-theories": lambda: ["SNC"],
    "arithmetic-complexity-theories": lambda: ["BND", "OUTC", "LIN", "POLY"],
    "optimised-disjunctive-reasoning": lambda: ["false"],
    "serialise-assignments": lambda: ["true"],
    "unsat-proofs": lambda: ["false"],
}
ALIASES = {"multiple-inputs-output-theories": "multiple-input-output-theories",
           "optimized-disjunctive-reasoning": "optimised-disjunctive-reasoning",
           "serialize-assignments": "serialise-assignments"}


@click.command(context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True})
@click.argument("capability", required=False)
@user_errors
def supports_command(capability):
    """Report a capability (VNN-LIB 2.0, chapter 5), e.g. 'onnxdual supports --onnx-operators'.

    Without CAPABILITY, lists the capability names. Element types: only 'real' (the analysis is real
    arithmetic; float32 queries are analysed as Real unless 'verify --strict'). Operators: every operator
    with a dual layer in the live registry (plugins included)."""
    if capability is None:
        for name in CAPABILITIES:
            click.echo(f"--{name}")
        return
    key = capability.lstrip("-").lower()
    key = ALIASES.get(key, key)
    if key not in CAPABILITIES:
        raise UserError(f"unknown capability {capability!r}; known: "
                        + ", ".join(f"--{k}" for k in CAPABILITIES))
    for line in CAPABILITIES[key]():
        click.echo(line)


# --------------------------------------------------------------------------------- VNN-COMP (hidden)


@click.command(hidden=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("category")
@click.argument("onnx_path", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("vnnlib_path", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("results", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("timeout", callback=parse_timeout)
@device_option()
@threads_option(THREADS_AUTO)
@split_option
@relaxation_option(defaults.VERIFY_RELAXATION)
@click.option("--strict", is_flag=True)
@click.option("--counterexample-tolerance", "tolerance", type=click.FloatRange(min=0, min_open=True, max=1),
              default=None, is_flag=False, flag_value=VNNCOMP_TOLERANCE, metavar="[TOL]",
              help=f"VNN-COMP's checker accepts a counterexample up to TOL (default {VNNCOMP_TOLERANCE:g}) "
                   "outside the input box: also search the box widened by TOL and answer sat with a witness "
                   "found there (the output still reaches the unsafe region exactly). Off: exact semantics.")
def vnncomp_command(category, onnx_path, vnnlib_path, results, timeout, device, threads_text, split_max_inputs,
                    relaxation, strict, tolerance):
    """VNN-COMP run_instance: decide VNNLIB_PATH for ONNX_PATH and write RESULTS (sat + witness, unsat,
    unknown, timeout or error). Used by vnncomp/run_instance.sh."""
    deadline = make_deadline(timeout)
    answer, body = "error", ""
    try:
        from onnxdual.errors import OnnxDualError
        from onnxdual.specs import check_io_sizes, format_vnncomp_witness, parse_vnnlib
        from onnxdual.verify import Deadline, Verifier, load_network
        from onnxdual.verify.counterexamples import outside_distance, tolerant_witness

        try:
            dev = setup_torch(threads_text or 1, device)
            prop = parse_vnnlib(vnnlib_path)
            network = load_network(onnx_path)
            check_io_sizes(prop, network.n_inputs, network.n_outputs, str(onnx_path))
            use_threads(threads_text, sum(p.numel() for p in network.net.parameters()))
            network.net.to(dev)
            verifier = Verifier.for_network(network, strict=strict, device=dev,
                                            split_max_inputs=split_max_inputs, relaxation=relaxation)
            # with a tolerance, the exact search leaves a fifth of the time to the widened one
            exact = Deadline(0.8 * deadline.remaining()) if tolerance else deadline
            result = verifier.decide(prop, exact)
            answer, x, y = result.answer, result.witness_x, result.witness_y
            log(f"{category}: {answer} in {result.seconds:.2f}s ({result.boxes} boxes)")
            if tolerance and answer != "sat":
                found = tolerant_witness(verifier.model, verifier.replay, prop, tolerance, deadline)
                if found is not None:
                    answer, x, y = "sat", found.x, found.y
                    log(f"{category}: sat with a witness {outside_distance(prop, found):.3g} outside the "
                        f"input box (at most the --counterexample-tolerance {tolerance:g}; exact semantics: "
                        f"{result.answer})")
            if answer == "sat":
                body = format_vnncomp_witness(x, y)
        except (OnnxDualError, UserError) as exc:
            log(f"error: {exc}")
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback, no results file claiming anything
        click.echo("onnxdual: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the results file must say "error", whatever happened
        log(f"error: {type(exc).__name__}: {exc}")
    text = answer + ("\n" + body if body else "") + "\n"
    try:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {results}: {exc.strerror or exc}")
    finish(1 if answer == "error" else 0)
    if answer == "error":
        sys.exit(1)


@click.command(hidden=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("onnx_path", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("vnnlib_path", type=click.Path(path_type=Path, dir_okay=False))
@user_errors
def vnncomp_prepare_command(onnx_path, vnnlib_path):
    """VNN-COMP prepare_instance: check that the network loads (every operator has a dual layer) and that
    the property parses and fits it. Exit 0 when the instance can be run."""
    from onnxdual.specs import check_io_sizes, parse_vnnlib
    from onnxdual.verify import load_network

    setup_torch(1, "cpu")
    prop = parse_vnnlib(vnnlib_path)
    network = load_network(onnx_path)
    check_io_sizes(prop, network.n_inputs, network.n_outputs, str(onnx_path))


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
def standalone() -> None:
    """onnxdual's solver commands (the same as 'onnxdual verify/supports/vnncomp')."""


standalone.add_command(verify_command, name="verify")
standalone.add_command(supports_command, name="supports")
standalone.add_command(vnncomp_command, name="vnncomp")
standalone.add_command(vnncomp_prepare_command, name="vnncomp-prepare")

__all__ = ["supports_command", "verify_command", "vnncomp_command", "vnncomp_prepare_command"]

if __name__ == "__main__":
    quiet_warnings()
    from onnxdual_cli.bench import bench_command

    standalone.add_command(bench_command, name="bench")
    standalone(prog_name="onnxdual")
