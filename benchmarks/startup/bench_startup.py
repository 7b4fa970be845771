"""Start-up times of the command line (issue 12, point 4): ``onnxdual --help``, ``onnxdual supports
--onnx-operators``, and ``onnxdual verify``'s overhead before its first bound (from the process start to the
network loaded and the property parsed: what ``verify --verbose --timeout T`` reports as the time left), each
as the median of a few fresh processes, wall and CPU (user + system) seconds, and the slowest imports of a
verify run (``python -X importtime``).

``--compare COMMIT`` runs the same commands from that commit's sources (``git archive``) next to the working
tree's, e.g. the commit before the lazy start-up, to print the previous numbers beside the new.

Pin it and record the load, as every figure in benchmarks/ (the numbers scale with it)::

    uptime; OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/startup/bench_startup.py --compare 4288afb

Targets: ``onnxdual --help`` under 1 s, verify's overhead before its first bound under 2 s (an idle core).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: what ``verify --verbose`` logs once the network is loaded: "...; 98.12s left after loading"
LEFT = re.compile(r"([0-9.]+)s left after loading")
TIMEOUT = 600.0
EXIT_RESERVE = 0.4  # onnxdual_cli.verify.EXIT_RESERVE: kept back from the timeout


def tiny_instance(folder: Path) -> tuple[Path, Path]:
    """A 2-2 ReLU network and an unsat VNN-LIB 1.0 property (written with onnx, as any user would)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([[1.0, 1.0], [1.0, -1.0]], np.float32)
    nodes = [helper.make_node("Gemm", ["input", "W"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["output"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(w, "W")])
    net = folder / "net.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(net))
    prop = folder / "prop.vnnlib"
    prop.write_text("".join(f"(declare-const {v} Real)\n" for v in ("X_0", "X_1", "Y_0", "Y_1"))
                    + "".join(f"(assert (>= {v} 0.0))\n(assert (<= {v} 1.0))\n" for v in ("X_0", "X_1"))
                    + "(assert (>= Y_0 2.5))\n")
    return net, prop


def sources_of(commit: str, folder: Path) -> Path:
    """``commit``'s ``onnxdual`` and ``cli`` (as ``onnxdual_cli``) unpacked into ``folder``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "onnxdual", "cli"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "onnxdual_cli").symlink_to(folder / "cli")
    return folder


def run(args: list[str], path: Path | None) -> tuple[float, float, str]:
    """Wall and CPU seconds of ``python -m onnxdual_cli.main ARGS`` in a fresh process, and its stderr."""
    env = dict(os.environ, ONNXDUAL_SLOW_EXIT="")
    if path is not None:
        env["PYTHONPATH"] = str(path)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "onnxdual_cli.main", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{args} failed: {err.strip()[-300:]}")
    return wall, usage.ru_utime + usage.ru_stime, err


def measure(label: str, args: list[str], path: Path | None, repeat: int) -> dict[str, float]:
    walls, cpus, overheads = [], [], []
    for _ in range(repeat):
        wall, cpu, err = run(args, path)
        walls.append(wall)
        cpus.append(cpu)
        found = LEFT.search(err)
        if found:
            overheads.append(TIMEOUT - EXIT_RESERVE - float(found.group(1)))
    row = {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}
    if overheads:
        row["before first bound"] = statistics.median(overheads)
    return row


def slowest_imports(args: list[str], path: Path | None, n: int = 8) -> list[tuple[float, str]]:
    env = dict(os.environ, ONNXDUAL_SLOW_EXIT="")
    if path is not None:
        env["PYTHONPATH"] = str(path)
    err = subprocess.run([sys.executable, "-X", "importtime", "-m", "onnxdual_cli.main", *args], env=env,
                         capture_output=True, text=True).stderr
    top = []
    for line in err.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and len(parts[2]) - len(parts[2].lstrip()) <= 2:
            top.append((int(parts[1]) / 1e6, parts[2].strip()))  # top-level imports, cumulative seconds
    return sorted(top, reverse=True)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", metavar="COMMIT", help="also run COMMIT's sources (the previous numbers)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        net, prop = tiny_instance(Path(tmp))
        cases = {"onnxdual --help": ["--help"],
                 "onnxdual supports --onnx-operators": ["supports", "--onnx-operators"],
                 "onnxdual verify (tiny net)": ["verify", str(prop), "--network", str(net), "--verbose",
                                                "--timeout", str(TIMEOUT), "--threads", "1"]}
        trees: dict[str, Path | None] = {"now": None}
        if args.compare:
            old = Path(tmp) / "old"
            old.mkdir()
            trees[args.compare] = sources_of(args.compare, old)
        load = os.getloadavg()
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; median of {args.repeat} runs; seconds")
        for label, cli_args in cases.items():
            for tree, path in trees.items():
                row = measure(label, cli_args, path, args.repeat)
                numbers = ", ".join(f"{k} {v:.2f}" for k, v in row.items())
                print(f"{label:<38} {tree:>8}: {numbers}")
        print("slowest top-level imports of the verify run (now), cumulative seconds:")
        for seconds, name in slowest_imports(cases["onnxdual verify (tiny net)"], None):
            print(f"  {seconds:6.2f}  {name}")


if __name__ == "__main__":
    main()
