"""Start-up times of the command line (issue 12, point 4): ``onnxdual --help``, ``onnxdual supports ...``,
``onnxdual certify --help``, and ``onnxdual verify``'s time to its first bound, each in fresh processes, wall
and CPU (user + system) seconds: the first run (``first``; with ``--cold``, after the package files were
evicted from the page cache) and the median of the others (``warm``); and the slowest imports of a verify run
(``python -X importtime``).

"Time to first bound" is measured by benchmarks/startup/first_bound.py: seconds from the process start to the
end of the first dual bound of the search (``Verifier.decide``'s first ``DualNetwork.lower_bound``), where the
process then ends. The verify rows are a tiny 2-2 ReLU network written here (always), and, with
``ONNXDUAL_SHARED`` set, test_2021's test_small and ACAS Xu 1_1 with property 1 from VNN-COMP. ``loaded`` is
what ``verify --verbose`` reports: seconds from the process start until the network is loaded;
``search cpu`` the CPU seconds of the search before its first bound (trivial witnesses, the quick attack).

``--bytecode`` runs with compiled bytecode, as an installed package does (site-packages holds ``.pyc``
files; a development checkout run with ``PYTHONDONTWRITEBYTECODE=1`` compiles every onnxdual module at every
start, ~0.2 s of CPU): a fresh ``PYTHONPYCACHEPREFIX`` per source tree, filled by one untimed run of each
command first.

``--compare COMMIT`` (repeatable) runs the same commands from that commit's sources (``git archive``) next to
the working tree's; ``--compare-site DIR`` puts DIR first on their ``PYTHONPATH`` (e.g. the earlier
``ml_dtypes`` 0.7.0: ``pip install --no-deps --target DIR ml_dtypes==0.7.0``), to print the previous numbers
in the previous environment beside the new.

Pin it and record the load, as every figure in benchmarks/ (the numbers scale with it)::

    uptime; OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/startup/bench_startup.py \\
        --compare 7a248b7 --compare-site /tmp/ml_dtypes-0.7.0

Targets: ``onnxdual --help`` under 1 s, verify's overhead before its first bound under 2 s (an idle core).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOOK = Path(__file__).resolve().parent / "first_bound.py"
#: what ``verify --verbose`` logs once the network is loaded: "...; 98.12s left after loading"
LEFT = re.compile(r"([0-9.]+)s left after loading")
TIMEOUT = 600.0
EXIT_RESERVE = 0.4  # onnxdual_cli.verify.EXIT_RESERVE: kept back from the timeout
#: the installed packages a verify run reads (evicted from the page cache by --cold)
COLD_PACKAGES = ("torch", "onnx", "onnxruntime", "onnx2torch", "numpy", "ml_dtypes", "click", "google",
                 "torchvision")


def tiny_instance(folder: Path) -> tuple[Path, Path]:
    """A 2-2 ReLU network and an unsat VNN-LIB 1.0 property (written with onnx, as any user would)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([[1.0, 1.0], [1.0, -1.0]], np.float32)
    nodes = [helper.make_node("Gemm", ["input", "W"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["output"])]
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(w, "W")])
    net = folder / "net.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(net))
    prop = folder / "prop.vnnlib"
    prop.write_text("".join(f"(declare-const {v} Real)\n" for v in ("X_0", "X_1", "Y_0", "Y_1"))
                    + "".join(f"(assert (>= {v} 0.0))\n(assert (<= {v} 1.0))\n" for v in ("X_0", "X_1"))
                    + "(assert (>= Y_0 2.5))\n")
    return net, prop


def shared_instances() -> dict[str, tuple[Path, Path]]:
    """VNN-COMP instances from ONNXDUAL_SHARED (none without it)."""
    root = Path(os.environ.get("ONNXDUAL_SHARED", "/nonexistent")) / "benchmarks" / "vnncomp"
    found = {"test_2021 test_small": (root / "test_2021/onnx/test_small.onnx",
                                      root / "test_2021/vnnlib/test_small.vnnlib"),
             "acasxu 1_1 prop_1": (root / "acasxu_2021/onnx/ACASXU_run2a_1_1_batch_2000.onnx",
                                   root / "acasxu_2021/vnnlib/prop_1.vnnlib")}
    return {k: v for k, v in found.items() if v[0].is_file() and v[1].is_file()}


def sources_of(commit: str, folder: Path) -> Path:
    """``commit``'s ``onnxdual`` and ``cli`` (as ``onnxdual_cli``) unpacked into ``folder``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "onnxdual", "cli"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "onnxdual_cli").symlink_to(folder / "cli")
    return folder


def evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache (posix_fadvise DONTNEED: no root needed; pages that
    another process has mapped stay)."""
    for top in paths:
        for path in [top] if top.is_file() else top.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def cold_paths(tree: Path | None) -> list[Path]:
    import importlib.util

    out = [tree if tree is not None else REPO / "onnxdual", REPO / "cli"]
    for name in COLD_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            out += [Path(p) for p in spec.submodule_search_locations]
    return out


def environment(path: Path | None, site: Path | None, pycache: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, ONNXDUAL_SLOW_EXIT="")
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    parts = [str(p) for p in (site, path) if p is not None]
    if parts:
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def run(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """One fresh process of ``python -m onnxdual_cli.main ARGS`` (verify through the first-bound hook)."""
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "first_bound.json"
        verify = args[0] == "verify"
        command = ([sys.executable, str(HOOK), str(marker), "--exit", *args] if verify
                   else [sys.executable, "-m", "onnxdual_cli.main", *args])
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        err = proc.stderr.read() if proc.stderr else ""
        _, status, usage = os.wait4(proc.pid, 0)
        row = {"wall": time.perf_counter() - t0, "cpu": usage.ru_utime + usage.ru_stime}
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{args} failed: {err.strip()[-300:]}")
        found = LEFT.search(err)
        if found:
            row["loaded"] = TIMEOUT - EXIT_RESERVE - float(found.group(1))
        if verify:
            if not marker.is_file():
                raise SystemExit(f"{args}: no first bound was recorded (the hook did not fire)")
            first = json.loads(marker.read_text())
            row = {"first bound wall": first["wall"], "first bound cpu": first["cpu"], **row,
                   "search cpu": first["cpu"] - first["decide_cpu"]}
            del row["wall"], row["cpu"]  # the process ends at the first bound: the same figures
        return row


def measure(args: list[str], env: dict[str, str], repeat: int, cold: list[Path] | None, prime: bool = False
            ) -> tuple[dict[str, float], dict[str, float]]:
    """(the first run, the median of the others); ``prime``: one untimed run before them."""
    if prime:
        run(args, env)
    if cold is not None:
        evict(cold)
    rows = [run(args, env) for _ in range(repeat)]
    warm = rows[1:] or rows
    return rows[0], {k: statistics.median(r[k] for r in warm) for k in rows[0]}


def slowest_imports(args: list[str], env: dict[str, str], n: int = 8) -> list[tuple[float, str]]:
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
    parser.add_argument("--repeat", type=int, default=4, help="runs per command (the first is 'first')")
    parser.add_argument("--compare", metavar="COMMIT", action="append", default=[],
                        help="also run COMMIT's sources (the previous numbers); repeatable")
    parser.add_argument("--compare-site", metavar="DIR", type=Path,
                        help="first on PYTHONPATH for the --compare runs (the previous environment)")
    parser.add_argument("--bytecode", action="store_true",
                        help="run with compiled bytecode (a fresh PYTHONPYCACHEPREFIX per tree, primed)")
    parser.add_argument("--cold", action="store_true",
                        help="evict the package files from the page cache before each command's first run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        net, prop = tiny_instance(Path(tmp))
        verify = ["--timeout", str(TIMEOUT), "--threads", "1", "--verbose"]
        cases = {"onnxdual --help": ["--help"],
                 "onnxdual supports --onnx-operators": ["supports", "--onnx-operators"],
                 "onnxdual supports --onnx-opset-versions": ["supports", "--onnx-opset-versions"],
                 "onnxdual certify --help": ["certify", "--help"],
                 "verify: tiny 2-2 net": ["verify", str(prop), "--network", str(net), *verify]}
        for label, (onnx_file, vnnlib) in shared_instances().items():
            cases[f"verify: {label}"] = ["verify", str(vnnlib), "--network", str(onnx_file), *verify]
        trees: dict[str, tuple[Path | None, Path | None]] = {"now": (None, None)}
        for commit in args.compare:
            old = Path(tmp) / f"old-{commit}"
            old.mkdir()
            trees[commit] = (sources_of(commit, old), args.compare_site)
        caches = {tree: Path(tmp) / f"pycache-{tree}" if args.bytecode else None for tree in trees}
        load = os.getloadavg()
        bytecode = ("compiled bytecode" if args.bytecode
                    else f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}")
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.repeat} runs per command: the "
              f"first{' (cold)' if args.cold else ''}, and the median of the others (warm); seconds; "
              f"{bytecode}")
        for label, cli_args in cases.items():
            for tree, (path, site) in trees.items():
                cold = cold_paths(path) if args.cold else None
                first, warm = measure(cli_args, environment(path, site, caches[tree]), args.repeat, cold,
                                      prime=args.bytecode)
                for kind, row in (("first", first), ("warm", warm)):
                    numbers = ", ".join(f"{k} {v:.2f}" for k, v in row.items())
                    print(f"{label:<40} {tree:>8} {kind:>5}: {numbers}", flush=True)
        load = os.getloadavg()
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")
        print("slowest top-level imports of the tiny verify run, cumulative seconds "
              "(-X importtime inflates):")
        for tree, (path, site) in trees.items():
            top = slowest_imports(cases["verify: tiny 2-2 net"], environment(path, site, caches[tree]))
            print(f"  {tree}: " + ", ".join(f"{name} {seconds:.2f}" for seconds, name in top))


if __name__ == "__main__":
    main()
