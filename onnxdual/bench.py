"""Benchmark runs over VNN-COMP style instance lists, with ground truth and baselines (pure library code).

An instances file is a CSV with rows ``onnx,vnnlib,timeout`` (VNN-COMP's ``instances.csv``: no header; a
header row is skipped), paths relative to a root folder (default: the file's folder). :func:`run_benchmark`
decides every instance with :class:`onnxdual.verify.Verifier` and returns one row per instance:

``benchmark, instance, onnx, vnnlib, timeout, answer, seconds, load_seconds, best_margin, boxes, note``

``answer`` is ``sat``/``unsat``/``unknown``/``timeout``, or ``unsupported`` (an operator without a dual layer,
or a construct onnxdual does not handle) or ``error`` (anything else that went wrong, in ``note``); neither
stops the run. A note never quotes a property file (a path in ``instances.csv`` may name any file).
``seconds`` covers parsing the property and deciding it (the part the timeout limits);
``load_seconds`` the first load of the network (in the process that decided it).

With ``workers > 1`` a pool of worker processes decides the instances, one thread and one instance each at
a time (:mod:`onnxdual.bench_workers`): a worker that crashes mid-instance makes it an ``error``, one that
overruns its timeout is killed and the instance is a ``timeout``. Under ``torchrun`` every rank decides
every ``world_size``-th instance (:func:`shard_instances`) and every rank ends with all rows, in the
instances' order (:func:`gather_rows`).

:func:`compare_expected` adds the ground truth (``expected`` and ``verdict``: ``correct``, ``unsound``,
``unsolved`` or ``no ground truth``); an answer is *unsound* when it is ``unsat`` where ``sat`` is known, or
``sat`` where ``unsat`` is known. :func:`find_regressions` compares with a previous ``results.csv``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from onnxdual.distributed import DistInfo, dist_info, gather_objects
from onnxdual.errors import InvalidInputError, OnnxDualError, UnsupportedError, UnsupportedOpsError
from onnxdual.inputfiles import read_bytes

RESULT_COLUMNS = ["benchmark", "instance", "onnx", "vnnlib", "timeout", "answer", "seconds", "load_seconds",
                  "best_margin", "boxes", "note"]
SOLVED = ("sat", "unsat")
ANSWERS = ("sat", "unsat", "unknown", "timeout", "unsupported", "error")


@dataclass(frozen=True)
class Instance:
    onnx: str  # as written in the instances file (relative to the root)
    vnnlib: str
    timeout: float
    root: Path

    @property
    def onnx_path(self) -> Path:
        return (self.root / self.onnx).resolve()

    @property
    def vnnlib_path(self) -> Path:
        return (self.root / self.vnnlib).resolve()

    @property
    def benchmark(self) -> str:
        parts = Path(self.onnx).parts
        return parts[0] if len(parts) >= 3 else self.root.name

    @property
    def name(self) -> str:
        return f"{_stem(self.onnx)}/{_stem(self.vnnlib)}"


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".gz", ".onnx", ".vnnlib"):
        name = name.removesuffix(suffix)
    return name


def _key(path: Path) -> str:
    """Identity of a file for matching: resolved path without a ``.gz`` suffix."""
    text = str(path.resolve())
    return text.removesuffix(".gz")


def read_instances(source: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Instance]:
    """Instances of ``source`` (a folder holding ``instances.csv``, or a CSV file). ``root``: the folder the
    paths are relative to (default: the CSV's folder)."""
    src = Path(source)
    csv_path = src / "instances.csv" if src.is_dir() else src
    if not csv_path.is_file():
        hint = " (a benchmark folder needs instances.csv)" if src.is_dir() else ""
        raise InvalidInputError(f"no instances file: {csv_path}{hint}")
    base = Path(root) if root is not None else csv_path.parent
    if not base.is_dir():
        raise InvalidInputError(f"root folder not found: {base}")
    instances = []
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {csv_path}: {exc}") from None
    for number, row in enumerate(rows, 1):
        row = [c.strip() for c in row]
        if not row or not any(row) or row[0].startswith("#"):
            continue
        if len(row) < 3:
            raise InvalidInputError(f"{csv_path}:{number}: expected 'onnx,vnnlib,timeout', "
                                    f"got {','.join(row)!r}")
        try:
            timeout = float(row[2])
        except ValueError:
            if number == 1:
                continue  # a header
            raise InvalidInputError(f"{csv_path}:{number}: timeout {row[2]!r} is not a number") from None
        if not timeout > 0:
            raise InvalidInputError(f"{csv_path}:{number}: timeout must be positive, got {row[2]}")
        instances.append(Instance(row[0], row[1], timeout, base))
    if not instances:
        raise InvalidInputError(f"{csv_path} lists no instances")
    return instances


Progress = Callable[[Instance, dict], None]


@dataclass(frozen=True)
class DecideOptions:
    """How every instance is decided (the same in the calling process and in each worker)."""

    max_timeout: float | None = None
    strict: bool = False
    device: str | None = None
    seed: int = 0
    verifier_options: dict | None = None

    def timeout(self, inst: Instance) -> float:
        return min(inst.timeout, self.max_timeout) if self.max_timeout else inst.timeout


def empty_row(inst: Instance, timeout: float, answer: str = "error", note: str = "") -> dict:
    """An instance's row before (or instead of) deciding it."""
    return {"benchmark": inst.benchmark, "instance": inst.name, "onnx": inst.onnx, "vnnlib": inst.vnnlib,
            "timeout": timeout, "answer": answer, "seconds": math.nan, "load_seconds": 0.0,
            "best_margin": math.nan, "boxes": 0, "note": note}


def decide_instance(inst: Instance, options: DecideOptions, networks: dict[str, object],
                    started: Callable[[], None] | None = None) -> dict:
    """One instance's row; ``networks`` caches the loaded networks (a load error included) by file.
    ``started()`` is called when the instance's time starts to count (its network loaded)."""
    import torch

    from onnxdual.specs import check_io_sizes, parse_vnnlib
    from onnxdual.verify import Deadline, Verifier, load_network

    timeout = options.timeout(inst)
    device = None if options.device is None else torch.device(options.device)
    row = empty_row(inst, timeout)
    key = _key(inst.onnx_path)
    try:
        if key not in networks:
            t0 = time.perf_counter()
            try:
                networks[key] = load_network(inst.onnx_path)
                if device is not None:
                    networks[key].net.to(device)
            except OnnxDualError as exc:
                networks[key] = exc
            row["load_seconds"] = round(time.perf_counter() - t0, 4)
        network = networks[key]
        if isinstance(network, Exception):
            raise network
        deadline = Deadline(timeout)
        if started is not None:
            started()
        prop = _parse_property(parse_vnnlib, inst)
        check_io_sizes(prop, network.n_inputs, network.n_outputs, inst.onnx)
        verifier = Verifier.for_network(network, strict=options.strict, device=device,
                                        **(options.verifier_options or {}))
        result = verifier.decide(prop, deadline, options.seed)
        row.update(answer=result.answer, seconds=round(deadline.elapsed(), 4), boxes=result.boxes,
                   best_margin=math.nan if result.best_margin is None else result.best_margin)
    except UnsupportedOpsError as exc:
        row.update(answer="unsupported", note=exc.summary)
    except UnsupportedError as exc:
        row.update(answer="unsupported", note=str(exc))
    except OnnxDualError as exc:
        row.update(answer="error", note=str(exc))
    except (RuntimeError, ValueError, MemoryError, torch.cuda.OutOfMemoryError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        row.update(answer="error", note=f"{type(exc).__name__}: {first}")
    return row


def run_benchmark(instances: list[Instance], *, max_timeout: float | None = None, strict: bool = False,
                  device=None, seed: int = 0, progress: Progress | None = None,
                  verifier_options: dict | None = None, workers: int = 1, grace: float | None = None,
                  world: DistInfo | None = None) -> pd.DataFrame:
    """Decide every instance (networks are loaded once per process). ``max_timeout`` caps each instance's
    timeout; ``progress(instance, row)`` is called after each one. ``workers > 1``: a pool of that many
    worker processes, one thread and one instance each at a time, a worker still on an instance ``grace``
    seconds past its timeout killed (:mod:`onnxdual.bench_workers`). In a
    process group (``world``, default: the initialised one) each rank decides its share of the instances
    (:func:`shard_instances`) and every rank returns all rows, in the order of ``instances``."""
    world = dist_info() if world is None else world
    options = DecideOptions(max_timeout, strict, None if device is None else str(device), seed,
                            verifier_options)
    mine = shard_instances(instances, world)
    if workers > 1:
        from onnxdual.bench_workers import GRACE, decide_in_pool

        rows = decide_in_pool(decide_instance, empty_row, mine, options, workers, progress,
                              GRACE if grace is None else grace)
    else:
        networks: dict[str, object] = {}
        rows = []
        for inst in mine:
            rows.append(decide_instance(inst, options, networks))
            if progress is not None:
                progress(inst, rows[-1])
    return pd.DataFrame(gather_rows(rows, len(instances), world), columns=RESULT_COLUMNS)


def shard_instances(instances: list[Instance], world: DistInfo) -> list[Instance]:
    """Rank ``r``'s instances: every ``world_size``-th from the ``r``-th (benchmarks' instances come in
    families of similar cost; dealing them out spreads each family over the ranks)."""
    return instances[world.rank::world.world_size]


def gather_rows(rows: list[dict], n: int, world: DistInfo) -> list[dict]:
    """Every rank's rows (:func:`shard_instances`' shares) put back in the instances' order, on every rank."""
    if not world.active:
        return rows
    parts = gather_objects(rows, world)
    out: list[dict] = [{}] * n
    for rank, part in enumerate(parts):
        out[rank::world.world_size] = part
    return out


def _parse_property(parse, inst: Instance):
    """The instance's property. A parse error is re-raised without its message, which may quote the file
    (the results and the report hold only what onnxdual computed, never a file's content)."""
    from onnxdual.specs import SpecError

    try:
        return parse(inst.vnnlib_path)
    except SpecError as exc:
        if isinstance(exc, UnsupportedError):
            reason = "uses a construct onnxdual does not decide"
        else:
            reason = "cannot be read as a VNN-LIB property"
        raise type(exc)(f"{inst.vnnlib} {reason} ('onnxdual verify' on it says why)") from None


# ------------------------------------------------------------------------------------------ ground truth


def _csv_bytes(path: Path, what: str) -> io.BytesIO:
    """A CSV the user named, read as a regular file (a FIFO would block pandas forever)."""
    return io.BytesIO(read_bytes(path, what, InvalidInputError, gunzip=False))



def read_expected(path: str | os.PathLike,
                  root: str | os.PathLike | None = None) -> dict[tuple[str, str], str]:
    """Ground truth from a CSV with columns ``onnx``, ``vnnlib``, ``expected`` (paths relative to ``root``,
    default the file's folder): ``{(onnx key, vnnlib key): "sat" | "unsat" | other}``."""
    p = Path(path)
    try:
        frame = pd.read_csv(_csv_bytes(p, "expected answers"), dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InvalidInputError(f"cannot read expected answers {p}: {exc}") from None
    missing = {"onnx", "vnnlib", "expected"} - set(frame.columns)
    if missing:
        raise InvalidInputError(f"{p}: missing column(s) {', '.join(sorted(missing))} "
                                "(need onnx, vnnlib, expected)")
    base = Path(root) if root is not None else p.parent
    return {(_key(base / r.onnx), _key(base / r.vnnlib)): r.expected.strip().lower()
            for r in frame.itertuples()}


def verdict(answer: str, expected: str | None) -> str:
    if expected not in SOLVED:
        return "no ground truth"
    if answer in SOLVED:
        return "correct" if answer == expected else "unsound"
    return "unsolved"


def compare_expected(results: pd.DataFrame, instances: list[Instance],
                     expected: dict[tuple[str, str], str]) -> pd.DataFrame:
    """``results`` with ``expected`` and ``verdict`` columns (rows in the order of ``instances``)."""
    out = results.copy()
    exp = [expected.get((_key(i.onnx_path), _key(i.vnnlib_path)), "") for i in instances]
    out["expected"] = exp
    out["verdict"] = [verdict(a, e) for a, e in zip(out["answer"], exp)]
    return out


def unsound_rows(results: pd.DataFrame) -> pd.DataFrame:
    if "verdict" not in results:
        return results.iloc[0:0]
    return results[results["verdict"] == "unsound"]


# ---------------------------------------------------------------------------------------------- baselines


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """A previous ``results.csv`` (the baseline)."""
    p = Path(path)
    try:
        frame = pd.read_csv(_csv_bytes(p, "baseline"), keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InvalidInputError(f"cannot read baseline {p}: {exc}") from None
    missing = {"onnx", "vnnlib", "answer", "seconds"} - set(frame.columns)
    if missing:
        raise InvalidInputError(f"{p}: not a results.csv (missing {', '.join(sorted(missing))})")
    return frame


def find_regressions(results: pd.DataFrame, baseline: pd.DataFrame, *, slowdown: float = 3.0,
                     slack: float = 1.0) -> list[dict]:
    """Instances that got worse than in ``baseline`` (matched on ``onnx`` and ``vnnlib`` as written):

    * ``lost``: solved (sat/unsat) in the baseline, not solved the same way now;
    * ``slower``: solved the same way, but ``seconds > slowdown * baseline seconds + slack``.
    Instances absent from either side are ignored."""
    base = {(str(r.onnx), str(r.vnnlib)): r for r in baseline.itertuples()}
    found = []
    for r in results.itertuples():
        b = base.get((str(r.onnx), str(r.vnnlib)))
        if b is None or b.answer not in SOLVED:
            continue
        now_s, base_s = _seconds(r.seconds), _seconds(b.seconds)
        entry = {"instance": r.instance, "baseline": b.answer, "now": r.answer, "baseline_seconds": base_s,
                 "seconds": now_s}
        if r.answer != b.answer:
            found.append({**entry, "kind": "lost"})
        elif not (now_s <= slowdown * base_s + slack):  # NaN (no time recorded) counts as slower
            found.append({**entry, "kind": "slower"})
    return found


def _seconds(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Answer counts per benchmark (and ``all``), with correct/unsound counts when ground truth is present."""
    rows = []
    groups = [(name, frame) for name, frame in results.groupby("benchmark", sort=False)]
    if len(groups) > 1 or not groups:
        groups.append(("all", results))
    for name, frame in groups:
        row = {"benchmark": name, "instances": len(frame)}
        for a in ANSWERS:
            row[a] = int((frame["answer"] == a).sum())
        if "verdict" in frame:
            row["expected_sat"] = int((frame["expected"] == "sat").sum())
            row["expected_unsat"] = int((frame["expected"] == "unsat").sum())
            row["correct"] = int((frame["verdict"] == "correct").sum())
            row["unsound"] = int((frame["verdict"] == "unsound").sum())
        solved = frame[frame["answer"].isin(SOLVED)]["seconds"]
        row["solved_seconds"] = round(float(solved.sum()), 3)
        row["total_seconds"] = round(float(frame["seconds"].fillna(0).sum() + frame["load_seconds"].sum()), 3)
        rows.append(row)
    return pd.DataFrame(rows)
