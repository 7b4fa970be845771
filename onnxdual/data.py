"""Labelled data sets from their standard files: MNIST (IDX), CIFAR-10 (python or binary batches), ``.npz``.

Nothing is ever downloaded. ``load_dataset(None)`` is the MNIST sample shipped inside the package.
Images come back as float32 ``(N, C, H, W)`` in [0, 1]; labels as int64 ``(N,)``.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from onnxdual.errors import InvalidInputError

SAMPLE = "mnist_test_sample.npz"


@dataclass(frozen=True)
class Dataset:
    x: torch.Tensor
    y: torch.Tensor
    name: str
    num_classes: int


def _open(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _idx(path: Path, expect_magic: int) -> np.ndarray:
    raw = _open(path)
    if len(raw) < 8:
        raise InvalidInputError(f"{path} is too short to be an IDX file")
    magic, count = int.from_bytes(raw[0:4], "big"), int.from_bytes(raw[4:8], "big")
    if magic != expect_magic:
        raise InvalidInputError(f"{path} is not an IDX {'image' if expect_magic == 2051 else 'label'} file "
                                f"(magic {magic}, expected {expect_magic})")
    if magic == 2051:
        rows, cols = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
        data = np.frombuffer(raw, np.uint8, offset=16)
        if data.size != count * rows * cols:
            raise InvalidInputError(f"{path}: header says {count} images of {rows}x{cols}, file holds {data.size} bytes")
        return data.reshape(count, 1, rows, cols)
    data = np.frombuffer(raw, np.uint8, offset=8)
    if data.size != count:
        raise InvalidInputError(f"{path}: header says {count} labels, file holds {data.size}")
    return data


def _find(directory: Path, stems: list[str]) -> Path | None:
    for sub in ("", "MNIST/raw", "mnist", "raw", "cifar-10-batches-py", "cifar-10-batches-bin"):
        for stem in stems:
            for suffix in ("", ".gz"):
                p = directory / sub / (stem + suffix)
                if p.is_file():
                    return p
    return None


def _mnist(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    prefix = "t10k" if split == "test" else "train"
    images = _find(directory, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
    labels = _find(directory, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    if images is None or labels is None:
        return None
    return _idx(images, 2051), _idx(labels, 2049)


def _cifar(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    py = [_find(directory, [n]) for n in names]
    if all(p is not None for p in py):
        xs, ys = [], []
        for p in py:
            try:
                with open(p, "rb") as f:
                    batch = pickle.load(f, encoding="bytes")  # the official CIFAR-10 python format
                xs.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch[b"labels"], np.int64))
            except Exception as exc:
                raise InvalidInputError(f"{p} is not a CIFAR-10 python batch: {exc}") from exc
        return np.concatenate(xs), np.concatenate(ys)
    binary = [_find(directory, [n + ".bin"]) for n in names]
    if all(p is not None for p in binary):
        xs, ys = [], []
        for p in binary:
            raw = np.frombuffer(_open(p), np.uint8)
            if raw.size % 3073:
                raise InvalidInputError(f"{p} is not a CIFAR-10 binary batch (size {raw.size})")
            rec = raw.reshape(-1, 3073)
            ys.append(rec[:, 0].astype(np.int64))
            xs.append(rec[:, 1:].reshape(-1, 3, 32, 32))
        return np.concatenate(xs), np.concatenate(ys)
    return None


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f or "y" not in f:
                raise InvalidInputError(f"{path} must hold arrays 'x' and 'y' (it has {', '.join(f.files)})")
            x, y = f["x"], f["y"]
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(f"cannot read {path} as .npz: {exc}") from exc
    if x.ndim == 3:  # (N, H, W)
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # NHWC
        x = x.transpose(0, 3, 1, 2)
    return x, y


def load_dataset(source: str | Path | None, split: str = "test", limit: int | None = None) -> Dataset:
    """Read a labelled data set: ``None`` (the shipped MNIST sample), a directory with MNIST or CIFAR-10
    standard files, or an ``.npz`` with ``x`` and ``y``."""
    if limit is not None and limit <= 0:
        raise InvalidInputError(f"limit must be positive, got {limit}")
    if source is None:
        with resources.as_file(resources.files("onnxdual") / "assets" / SAMPLE) as p:
            x, y = _npz(Path(p))
        name = "MNIST test sample (first 500 of t10k)"
    else:
        path = Path(source)
        if not path.exists():
            raise InvalidInputError(f"data not found: {path}")
        if path.is_file():
            if path.suffix != ".npz":
                raise InvalidInputError(f"{path}: give a directory with MNIST/CIFAR-10 files or an .npz file")
            x, y = _npz(path)
            name = path.name
        else:
            found = _mnist(path, split)
            name = f"MNIST {split}"
            if found is None:
                found = _cifar(path, split)
                name = f"CIFAR-10 {split}"
            if found is None:
                raise InvalidInputError(
                    f"{path} holds neither MNIST ({'t10k' if split == 'test' else 'train'}-images-idx3-ubyte[.gz] "
                    "and labels) nor CIFAR-10 (test_batch / data_batch_N, python or .bin) files")
            x, y = found
    if x.shape[0] != y.shape[0]:
        raise InvalidInputError(f"{x.shape[0]} images but {y.shape[0]} labels")
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.equal(np.mod(y, 1), 0)):
        raise InvalidInputError("labels must be integers")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    xt = torch.from_numpy(np.ascontiguousarray(x))
    xt = xt.float() / 255.0 if x.dtype == np.uint8 else xt.float()
    yt = torch.from_numpy(np.asarray(y).astype(np.int64))
    if (yt < 0).any():
        raise InvalidInputError("labels must be non-negative")
    num_classes = max(10, int(yt.max()) + 1) if yt.numel() else 10
    return Dataset(xt, yt, name, num_classes)
