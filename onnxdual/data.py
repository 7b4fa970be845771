"""Labelled data sets read from their standard files: MNIST (IDX), CIFAR-10 (python or binary batches) and
``.npz``.

Nothing is ever downloaded. ``load_dataset(None)`` is the MNIST sample shipped inside the package (the first
500 images of the MNIST test set; see ``onnxdual/assets/README.md``).

Images come back as float32 ``(N, C, H, W)`` in [0, 1] (8-bit pixels divided by 255), labels as int64
``(N,)``.
Every problem with the input raises :class:`onnxdual.errors.InvalidInputError` with a one-line message.

Accepted sources:

* ``None``: the embedded MNIST test sample (``split="test"`` only).
* A directory with the MNIST files ``{t10k,train}-{images-idx3,labels-idx1}-ubyte`` (also spelled
  ``...-images.idx3-ubyte``), raw or gzip-compressed, directly or in a ``MNIST/raw``, ``MNIST``, ``mnist``,
  ``mnist/raw`` or ``raw`` sub-folder.
* A directory with CIFAR-10 batches: the python version (``test_batch``, ``data_batch_1`` ...
  ``data_batch_5``, directly or in ``cifar-10-batches-py``; read with a restricted unpickler that only
  builds numpy arrays) or the binary version (``test_batch.bin``, ``data_batch_N.bin``, directly or in
  ``cifar-10-batches-bin``).
* An ``.npz`` file with arrays ``x`` and ``y``. ``uint8`` images are divided by 255; float images are kept as
  they are; ``(N, H, W)`` gets a channel axis and ``(N, H, W, C)`` with ``C`` in {1, 3} becomes
  ``(N, C, H, W)``.
  Archives with ``images`` and ``labels`` (and optionally ``class_names``) instead are read as well; there
  ``labels`` may be longer than ``images`` (a set of which only the first images are present), and only
  the labels of the present images are kept. ``split`` is ignored for ``.npz`` files.
"""

from __future__ import annotations

import codecs
import gzip
import importlib
import io
import pickle
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from onnxdual.errors import InvalidInputError

__all__ = ["Dataset", "load_dataset", "SPLITS", "SAMPLE"]

SAMPLE = "mnist_test_sample.npz"
SPLITS = ("test", "train")

_IDX_IMAGES, _IDX_LABELS = 2051, 2049  # 0x0803: uint8 3-D, 0x0801: uint8 1-D
_MNIST_DIRS = ("", "MNIST/raw", "MNIST", "mnist", "mnist/raw", "raw")
_CIFAR_PY_DIRS = ("", "cifar-10-batches-py")
_CIFAR_BIN_DIRS = ("", "cifar-10-batches-bin")
_CIFAR_RECORD = 1 + 3 * 32 * 32


@dataclass(frozen=True)
class Dataset:
    """A labelled data set held in memory."""

    x: torch.Tensor  #: float32 ``(N, C, H, W)`` in [0, 1] for images (``(N, *shape)`` for a float ``.npz``)
    y: torch.Tensor  #: int64 ``(N,)``
    name: str  #: e.g. ``"mnist-test"``, ``"cifar10-train"``, ``"mnist-test-sample"``, ``"data.npz"``
    num_classes: int

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. ``(1, 28, 28)``."""
        return tuple(self.x.shape[1:])


# ---------------------------------------------------------------------------------------------------------
# file formats
# ---------------------------------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name says)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidInputError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def _read_idx(path: Path, expect_magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes: images ``(N, rows, cols)`` or labels ``(N,)`` (big-endian header)."""
    raw = _read_bytes(path)
    kind = "image" if expect_magic == _IDX_IMAGES else "label"
    ndim = 3 if expect_magic == _IDX_IMAGES else 1
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InvalidInputError(f"{path}: {len(raw)} bytes is too short for an IDX {kind} file "
                                f"(header alone is {header} bytes)")
    magic = int(np.frombuffer(raw, ">u4", count=1)[0])
    if magic != expect_magic:
        raise InvalidInputError(f"{path}: not an IDX {kind} file "
                                f"(magic number {magic}, expected {expect_magic})")
    dims = [int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4)]
    data = np.frombuffer(raw, np.uint8, offset=header)
    if data.size != int(np.prod(dims)):
        shape = "x".join(map(str, dims))
        raise InvalidInputError(f"{path}: header announces {shape} = {int(np.prod(dims))} bytes of {kind}s, "
                                f"the file holds {data.size} (truncated or corrupt)")
    return data.reshape(dims)


_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")


class _ArrayUnpickler(pickle.Unpickler):
    """Builds only what the CIFAR-10 python batches contain (dicts, lists, bytes, numbers, numpy arrays):
    any other global in the stream (a function, a class) is refused, so no code runs while reading."""

    def find_class(self, module: str, name: str):
        if name in ("_reconstruct", "scalar") and module in _MULTIARRAY:
            return getattr(_numpy_multiarray(), name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "_codecs" and name == "encode":  # how python 3 pickles bytes at protocol 2
            return codecs.encode
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data batch")


def _numpy_multiarray():
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    raise ImportError("numpy multiarray module not found")  # pragma: no cover


def _read_cifar_python(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = _read_bytes(path)
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # truncated stream, refused global, not a pickle at all
        raise InvalidInputError(f"{path}: not a CIFAR-10 python batch "
                                f"({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise InvalidInputError(f"{path}: not a CIFAR-10 python batch "
                                f"(holds a {type(batch).__name__}, not a dict)")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise InvalidInputError(f"{path}: a CIFAR-10 python batch needs 'data' and 'labels' "
                                f"(it has {', '.join(map(str, batch)) or 'nothing'})")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise InvalidInputError(f"{path}: CIFAR-10 'data' must be uint8 (N, 3072), "
                                f"got {data.dtype} {data.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.frombuffer(_read_bytes(path), np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise InvalidInputError(f"{path}: not a CIFAR-10 binary batch ({raw.size} bytes is not a whole "
                                f"number of {_CIFAR_RECORD}-byte records)")
    records = raw.reshape(-1, _CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0]


# ---------------------------------------------------------------------------------------------------------
# directory layouts
# ---------------------------------------------------------------------------------------------------------
def _first_file(directory: Path, subdirs: tuple[str, ...], stems: list[str]) -> Path | None:
    for sub in subdirs:
        for stem in stems:
            for suffix in ("", ".gz"):
                p = directory / sub / (stem + suffix)
                if p.is_file():
                    return p
    return None


def _mnist_names(prefix: str, what: str) -> list[str]:
    idx = "idx3" if what == "images" else "idx1"
    return [f"{prefix}-{what}-{idx}-ubyte", f"{prefix}-{what}.{idx}-ubyte"]


def _mnist_files(directory: Path, split: str) -> tuple[Path | None, Path | None]:
    prefix = "t10k" if split == "test" else "train"
    # both files from one folder when possible
    for sub in _MNIST_DIRS:
        images = _first_file(directory, (sub,), _mnist_names(prefix, "images"))
        labels = _first_file(directory, (sub,), _mnist_names(prefix, "labels"))
        if images is not None and labels is not None:
            return images, labels
    return (_first_file(directory, _MNIST_DIRS, _mnist_names(prefix, "images")),
            _first_file(directory, _MNIST_DIRS, _mnist_names(prefix, "labels")))


def _cifar_names(split: str) -> list[str]:
    return ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]


def _has_mnist(directory: Path) -> bool:
    return any(any(p is not None for p in _mnist_files(directory, s)) for s in SPLITS)


def _has_cifar(directory: Path) -> bool:
    names = _cifar_names("test") + _cifar_names("train")
    return (_first_file(directory, _CIFAR_PY_DIRS, names) is not None
            or _first_file(directory, _CIFAR_BIN_DIRS, [n + ".bin" for n in names]) is not None)


def _load_mnist(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _mnist_files(directory, split)
    if images is None or labels is None:
        prefix = "t10k" if split == "test" else "train"
        missing = f"{prefix}-images-idx3-ubyte[.gz]" if images is None else f"{prefix}-labels-idx1-ubyte[.gz]"
        raise InvalidInputError(f"{directory} holds MNIST files but not {missing} for the {split} split")
    x, y = _read_idx(images, _IDX_IMAGES), _read_idx(labels, _IDX_LABELS)
    if x.shape[0] != y.shape[0]:
        raise InvalidInputError(f"{images.name} holds {x.shape[0]} images but {labels.name} "
                                f"holds {y.shape[0]} labels")
    return x[:, None], y


def _load_cifar(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = _cifar_names(split)
    python = [_first_file(directory, _CIFAR_PY_DIRS, [n]) for n in names]
    binary = [_first_file(directory, _CIFAR_BIN_DIRS, [n + ".bin"]) for n in names]
    if all(p is not None for p in python):
        files, reader = python, _read_cifar_python
    elif all(p is not None for p in binary):
        files, reader = binary, _read_cifar_binary
    else:
        have = python if any(p is not None for p in python) else binary
        suffix = "" if have is python else ".bin"
        missing = [n + suffix for n, p in zip(names, have) if p is None]
        raise InvalidInputError(f"{directory} holds CIFAR-10 files but not {', '.join(missing)} "
                                f"for the {split} split")
    parts = []
    for p in files:
        x, y = reader(p)
        y = np.asarray(y).reshape(-1)
        if x.shape[0] != y.shape[0]:
            raise InvalidInputError(f"{p}: {x.shape[0]} images but {y.shape[0]} labels")
        parts.append((x, y))
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


# ---------------------------------------------------------------------------------------------------------
# .npz
# ---------------------------------------------------------------------------------------------------------
def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, int | None]:
    """``x``, ``y`` and the number of classes if the archive names it (``class_names`` or ``num_classes``)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.files)
            if "x" in keys and "y" in keys:
                x, y, prefix = f["x"], f["y"], False
            elif "images" in keys and "labels" in keys:
                x, y, prefix = f["images"], f["labels"], True
            else:
                raise InvalidInputError(f"{path} must hold arrays 'x' (inputs) and 'y' (labels); "
                                        f"it has {', '.join(keys) or 'no arrays'}")
            num_classes = None
            if "class_names" in keys:
                num_classes = int(np.asarray(f["class_names"]).size)
            elif "num_classes" in keys:
                num_classes = int(np.asarray(f["num_classes"]).reshape(-1)[0])
    except InvalidInputError:
        raise
    except Exception as exc:  # not a zip, pickled object arrays, damaged members
        raise InvalidInputError(f"cannot read {path} as .npz ({type(exc).__name__}: {exc})") from None
    if x.ndim < 2:
        raise InvalidInputError(f"{path}: x must be (N, ...) with at least one axis per example, "
                                f"got shape {x.shape}")
    if x.ndim == 3:  # (N, H, W) gray images
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # NHWC
        x = x.transpose(0, 3, 1, 2)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if prefix and y.ndim == 1 and y.shape[0] > x.shape[0]:
        y = y[: x.shape[0]]  # all labels of a set of which only the first images are present
    return x, y, num_classes


# ---------------------------------------------------------------------------------------------------------
# checks and conversion
# ---------------------------------------------------------------------------------------------------------
def _check_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.ndim != 1:
        raise InvalidInputError(f"{where}: labels must be one integer per example, got shape {y.shape}")
    if y.shape[0] != n:
        raise InvalidInputError(f"{where}: {n} images but {y.shape[0]} labels")
    if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise InvalidInputError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(np.equal(np.mod(y, 1), 0)):
            raise InvalidInputError(f"{where}: labels must be integers (found non-integral values)")
    if y.size and y.min() < 0:
        raise InvalidInputError(f"{where}: labels must be non-negative class indices (found {y.min()})")
    return y.astype(np.int64)


def _to_float(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out /= 255.0
        return out
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise InvalidInputError(f"{where}: inputs of dtype {x.dtype} are not supported; store 8-bit "
                                "images as uint8 (scaled to [0, 1]) or inputs as floats")
    out = np.array(x, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(out)):
        raise InvalidInputError(f"{where}: inputs contain NaN or infinite values")
    return out


def _sample_path():
    return resources.files("onnxdual") / "assets" / SAMPLE


def load_dataset(source: str | Path | None, split: str = "test", limit: int | None = None) -> Dataset:
    """Read a labelled data set (see the module docstring for the accepted sources).

    ``split`` is ``"test"`` or ``"train"`` (MNIST and CIFAR-10 directories; ignored for ``.npz``).
    ``limit`` keeps the first ``limit`` examples. MNIST and CIFAR-10 have 10 classes; an ``.npz`` has as
    many as its ``class_names`` (or ``num_classes``) say, else ``max(10, largest label + 1)``, counted
    before ``limit``.
    """
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    whole = isinstance(limit, (int, np.integer)) and not isinstance(limit, bool)
    if limit is not None and (not whole or limit <= 0):
        raise InvalidInputError(f"limit must be a positive number of examples, got {limit!r}")
    num_classes: int | None = 10
    if source is None:
        if split != "test":
            raise InvalidInputError("the embedded sample is MNIST test data only; give a data directory "
                                    "or .npz for the train split")
        with resources.as_file(_sample_path()) as p:
            x, y, _ = _load_npz(Path(p))
        name, where = "mnist-test-sample", f"embedded {SAMPLE}"
    else:
        path = Path(source).expanduser()
        where = str(path)
        if not path.exists():
            raise InvalidInputError(f"data not found: {path}")
        if path.is_file():
            if path.suffix.lower() != ".npz":
                raise InvalidInputError(f"{path}: expected a directory with MNIST or CIFAR-10 files, "
                                        "or an .npz file with arrays x and y")
            x, y, num_classes = _load_npz(path)
            name = path.name
        else:
            mnist, cifar = _has_mnist(path), _has_cifar(path)
            if mnist and cifar:
                raise InvalidInputError(f"{path} holds both MNIST and CIFAR-10 files; "
                                        "give the folder of one of them")
            if mnist:
                (x, y), name = _load_mnist(path, split), f"mnist-{split}"
            elif cifar:
                (x, y), name = _load_cifar(path, split), f"cifar10-{split}"
            else:
                prefix = "t10k" if split == "test" else "train"
                batches = "test_batch" if split == "test" else "data_batch_1..5"
                raise InvalidInputError(
                    f"{path}: unknown data layout; expected MNIST ({prefix}-images-idx3-ubyte and "
                    f"{prefix}-labels-idx1-ubyte, optionally .gz, here or in MNIST/raw or mnist) or CIFAR-10 "
                    f"({batches}, python pickle or .bin, here or in cifar-10-batches-py or -bin)")
    if x.shape[0] == 0:
        raise InvalidInputError(f"{where}: no examples")
    y = _check_labels(np.asarray(y), x.shape[0], where)
    top = int(y.max())
    if num_classes is None:
        num_classes = max(10, top + 1)
    elif top >= num_classes:
        raise InvalidInputError(f"{where}: label {top} is out of range for {num_classes} classes")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return Dataset(torch.from_numpy(_to_float(x, where)), torch.from_numpy(np.ascontiguousarray(y)), name,
                   num_classes)
