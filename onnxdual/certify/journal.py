"""The progress file of a certification run: every finished batch appended as the run goes, so an interrupted
run continues where it stopped (``onnxdual certify --resume``) and nothing computed is lost.

The file holds JSON lines: a header naming the problem (a fingerprint of the models' graphs and weights,
the data and every setting, and the number of ranks) with the relaxation the run chose, then one line per
finished batch (its eps, first index, records, the thumbnails it added and its bound time). Floats are
written with ``repr`` (``inf`` and ``nan`` included) and arrays as their raw bytes, so a saved batch reads
back value for value. Each line is flushed and fsynced before the next batch starts; a line cut short by a
kill is dropped when the file is read again (that batch is simply certified again). While a run appends to
it the file is locked (``flock``), so two runs cannot both continue one file.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor, nn

from onnxdual.certify.batch import BatchResult
from onnxdual.errors import InvalidInputError, OutputBusyError

#: the first line's ``format``
FORMAT = "onnxdual-certify-progress/1"
#: the progress file's name in a report folder
PROGRESS_FILE = "certify-progress.jsonl"


def progress_path(out: str | os.PathLike[str], rank: int = 0, ranks: int = 1) -> Path:
    """Where a run writing its report into ``out`` keeps its progress (one file per rank of a group)."""
    name = PROGRESS_FILE if ranks <= 1 else PROGRESS_FILE.replace(".jsonl", f".rank{rank}.jsonl")
    return Path(out) / name


def _tensor_digest(h: "hashlib._Hash", t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def run_fingerprint(nets: list[nn.Module], x: Tensor, y: Tensor, settings: Any, ranks: int = 1) -> dict:
    """What must be equal for a saved batch to be a batch of this run: the models (graph and every
    tensor), the data, every setting and the number of ranks (which batches a rank certifies)."""
    models = hashlib.sha256()
    for net in nets:
        models.update(str(getattr(net, "graph", net)).encode())
        for name, t in net.state_dict().items():
            models.update(name.encode())
            _tensor_digest(models, t)
    data = hashlib.sha256()
    _tensor_digest(data, x)
    _tensor_digest(data, y)
    settings_json = json.loads(json.dumps(dataclasses.asdict(settings)))
    return {"model": models.hexdigest(), "data": data.hexdigest(), "examples": int(x.shape[0]),
            "settings": settings_json, "ranks": int(ranks)}


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__array__": str(value.dtype), "shape": list(value.shape),
                "data": base64.b64encode(np.ascontiguousarray(value).tobytes()).decode("ascii")}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            raw = base64.b64decode(value["data"])
            return np.frombuffer(raw, dtype=np.dtype(value["__array__"])).reshape(value["shape"]).copy()
        return {k: _decode(v) for k, v in value.items()}
    return value


def _differences(saved: dict, now: dict) -> list[str]:
    out = [what for what in ("model", "data", "examples", "ranks") if saved.get(what) != now.get(what)]
    old, new = saved.get("settings", {}), now["settings"]
    out += [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
    return out


class Journal:
    """The progress file ``path`` of one run. ``resume``: ``True`` continues the run saved there (an absent
    or empty file starts one), ``False`` discards it, ``None`` refuses to touch a file holding saved batches
    (:class:`InvalidInputError` saying how to continue or discard it)."""

    def __init__(self, path: str | os.PathLike[str], resume: bool | None = None):
        self.path = Path(path)
        self.resume = resume
        self._file: IO[str] | None = None
        self._header: dict | None = None
        self._fingerprint: dict | None = None
        self._batches: dict[tuple[int, int], dict] = {}

    # -- reading ---------------------------------------------------------------------------------------
    def _read(self) -> tuple[dict | None, dict[tuple[int, int], dict], int]:
        """Header, saved batches and the length of the intact part of the file (a torn last line drops)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None, {}, 0
        except OSError as exc:
            raise InvalidInputError(f"cannot read the progress file {str(self.path)!r}: "
                                    f"{exc.strerror or exc}") from None
        header, batches, good = None, {}, 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                entry = json.loads(line)
            except ValueError:
                break
            if header is None:
                if not isinstance(entry, dict) or entry.get("format") != FORMAT:
                    raise InvalidInputError(f"{str(self.path)!r} is not an onnxdual certify progress file")
                header = entry
            else:
                batches[(entry["eps_index"], entry["start"])] = entry
            good += len(line)
        return header, batches, good

    @property
    def saved_examples(self) -> int:
        """Example-eps pairs the file holds (after :meth:`open`)."""
        return sum(len(b["records"]) for b in self._batches.values())

    def open(self, fingerprint: dict) -> tuple[str, str] | None:
        """Take the file for a run with ``fingerprint`` (:func:`run_fingerprint`); returns the relaxation and
        the reason an interrupted run chose, when continuing one (``None``: a fresh run)."""
        header, batches, good = self._read()
        if header is not None and self.resume is None and batches:
            n = sum(len(b["records"]) for b in batches.values())
            raise InvalidInputError(f"{str(self.path.parent)!r} holds an interrupted run ({n} example-eps "
                                    "results saved): continue it with --resume, or start afresh with "
                                    "--no-resume")
        if header is not None and self.resume:
            differ = _differences(header["fingerprint"], fingerprint)
            if differ:
                raise InvalidInputError(f"cannot resume from {str(self.path)!r}: the interrupted run "
                                        f"certified a different problem ({'; '.join(differ[:4])}); give "
                                        "the same model, data and options, or --no-resume")
        else:
            header, batches, good = None, {}, 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OutputBusyError(f"another onnxdual run is using {str(self.path)!r}") from None
            raise
        os.ftruncate(fd, good)  # drops a line cut short by a kill (or the whole file for a fresh run)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._header, self._batches, self._fingerprint = header, batches, fingerprint
        return (header["relaxation"], header["relaxation_choice"]) if header else None

    def has(self, eps_index: int, start: int) -> bool:
        return (eps_index, start) in self._batches

    def saved(self, eps_index: int, start: int) -> BatchResult | None:
        """The batch an interrupted run saved, as it computed it; ``None`` when it was not saved."""
        entry = self._batches.get((eps_index, start))
        if entry is None:
            return None
        return BatchResult(entry["records"], entry["stage_records"], entry["seconds"],
                           adversarials=[_decode(a) for a in entry["adversarials"]])

    # -- writing ---------------------------------------------------------------------------------------
    def _append(self, entry: dict) -> None:
        if self._file is None:
            raise RuntimeError("the progress file is not open")
        self._file.write(json.dumps(entry, allow_nan=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def start(self, relaxation: str, relaxation_choice: str) -> None:
        """Write the header of a fresh run (a continued run keeps its own)."""
        if self._header is None:
            self._header = {"format": FORMAT, "fingerprint": self._fingerprint, "relaxation": relaxation,
                            "relaxation_choice": relaxation_choice}
            self._append(self._header)

    def save(self, eps_index: int, start: int, batch: BatchResult) -> None:
        """Append a finished batch (its thumbnails as :meth:`CertifyResult.add_batch` picked them)."""
        entry = {"eps_index": eps_index, "start": start, "seconds": batch.seconds, "records": batch.records,
                 "stage_records": batch.stage_records,
                 "adversarials": [_encode(a) for a in batch.adversarials or []]}
        self._append(entry)
        self._batches[(eps_index, start)] = entry

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self) -> None:
        """Close and remove the file: the run's results are written elsewhere (its report)."""
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
