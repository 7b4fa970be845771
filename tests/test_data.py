"""onnxdual.data: the embedded sample, the real MNIST / CIFAR-10 files in ../shared, synthetic files in every
supported layout, and one clear error per kind of bad input."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from onnxdual.data import Dataset, load_dataset
from onnxdual.errors import InvalidInputError

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# ---------------------------------------------------------------------------------------------------------
# writers of synthetic files
# ---------------------------------------------------------------------------------------------------------
def idx_images(x: np.ndarray, magic: int = 2051) -> bytes:
    n, rows, cols = x.shape
    return struct.pack(">IIII", magic, n, rows, cols) + x.astype(np.uint8).tobytes()


def idx_labels(y: np.ndarray, magic: int = 2049) -> bytes:
    return struct.pack(">II", magic, len(y)) + y.astype(np.uint8).tobytes()


def write(path, data: bytes, gz: bool = False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def images(n: int, shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def labels(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, size=n).astype(np.uint8)


def write_mnist(root, split="t10k", n=7, spelling="-", gz=False, sub=""):
    x, y = images(n, (28, 28)), labels(n)
    folder = root / sub if sub else root
    ext = ".gz" if gz else ""
    write(folder / f"{split}-images{spelling}idx3-ubyte{ext}", idx_images(x), gz)
    write(folder / f"{split}-labels{spelling}idx1-ubyte{ext}", idx_labels(y), gz)
    return x, y


def py2_cifar_pickle(data: np.ndarray, ys: list[int]) -> bytes:
    """A CIFAR-10 batch as Python 2's cPickle wrote it (protocol 2, byte-string keys, numpy.core globals)."""
    def string(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    out = b"\x80\x02}("
    out += string(b"batch_label") + string(b"testing batch 1 of 1")
    out += string(b"labels") + b"](" + b"".join(b"K" + bytes([v]) for v in ys) + b"e"
    out += string(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b") + b"\x87R"
    shape = b"M" + struct.pack("<H", data.shape[0]) + b"M" + struct.pack("<H", data.shape[1]) + b"\x86"
    dtype = (b"cnumpy\ndtype\n" + string(b"u1") + b"\x89\x88\x87R"
             + b"(K\x03" + string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    out += b"(K\x01" + shape + dtype + b"\x89" + string(data.tobytes()) + b"tb"
    return out + b"u."


def py3_cifar_pickle(data: np.ndarray, ys: list[int]) -> bytes:
    return pickle.dumps({b"batch_label": b"x", b"labels": list(map(int, ys)), b"data": data}, protocol=2)


def cifar_bin(data: np.ndarray, ys: np.ndarray) -> bytes:
    return np.concatenate([ys.astype(np.uint8)[:, None], data], axis=1).tobytes()


def check(ds: Dataset, x_uint8: np.ndarray, y: np.ndarray, name: str):
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert ds.x.shape == x_uint8.shape and ds.name == name and ds.num_classes == 10
    np.testing.assert_array_equal(ds.x.numpy(), x_uint8.astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y.numpy(), y.astype(np.int64))
    assert ds.x.numpy().flags.writeable


def bad(source, *args, match: str, **kwargs) -> str:
    with pytest.raises(InvalidInputError, match=match) as info:
        load_dataset(source, *args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


# ---------------------------------------------------------------------------------------------------------
# embedded and real data
# ---------------------------------------------------------------------------------------------------------
def test_embedded_sample():
    ds = load_dataset(None)
    assert ds.x.shape == (500, 1, 28, 28) and ds.x.dtype == torch.float32 and len(ds) == 500
    assert ds.input_shape == (1, 28, 28)
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert ds.y.dtype == torch.int64 and set(ds.y.tolist()) == set(range(10))
    assert ds.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known start of the MNIST test set
    assert ds.num_classes == 10 and ds.name == "mnist-test-sample"
    assert load_dataset(None, limit=20).x.shape == (20, 1, 28, 28)
    bad(None, "train", match="test data only")


def test_real_mnist(shared):
    root = shared("data", "mnist")
    test = load_dataset(root)
    assert test.x.shape == (10000, 1, 28, 28) and test.name == "mnist-test"
    assert torch.bincount(test.y, minlength=10).tolist() == MNIST_TEST_COUNTS
    sample = load_dataset(None)
    assert torch.equal(test.x[:500], sample.x) and torch.equal(test.y[:500], sample.y)
    train = load_dataset(root, split="train", limit=60000)
    assert train.x.shape == (60000, 1, 28, 28)
    assert torch.bincount(train.y, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert abs(float(train.x.mean()) - 0.13066) < 1e-4 and abs(float(train.x.std()) - 0.30811) < 1e-4
    assert load_dataset(root, limit=3).x.shape == (3, 1, 28, 28)


def test_real_cifar_partial_npz(shared):
    ds = load_dataset(shared("data", "cifar10", "cifar10_test_exact_partial.npz"))
    assert ds.x.shape == (1017, 3, 32, 32) and ds.y.shape == (1017,) and ds.num_classes == 10
    assert ds.y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert (ds.x[0, 0, 0, :5] * 255).round().tolist() == [158, 159, 165, 166, 160]


# ---------------------------------------------------------------------------------------------------------
# synthetic files in every layout
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["-", "."])
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("sub", ["", "MNIST/raw", "mnist"])
def test_mnist_layouts(tmp_path, spelling, gz, sub):
    x, y = write_mnist(tmp_path, spelling=spelling, gz=gz, sub=sub)
    check(load_dataset(tmp_path), x[:, None], y, "mnist-test")
    xt, yt = write_mnist(tmp_path, split="train", n=5, spelling=spelling, gz=gz, sub=sub)
    check(load_dataset(str(tmp_path), split="train"), xt[:, None], yt, "mnist-train")
    check(load_dataset(tmp_path, limit=2), x[:2, None], y[:2], "mnist-test")


@pytest.mark.parametrize("writer", [py2_cifar_pickle, py3_cifar_pickle])
@pytest.mark.parametrize("sub", ["", "cifar-10-batches-py"])
def test_cifar_python_batches(tmp_path, writer, sub):
    x, y = images(4, (3072,)), labels(4)
    write(tmp_path / sub / "test_batch", writer(x, y.tolist()))
    check(load_dataset(tmp_path), x.reshape(4, 3, 32, 32), y, "cifar10-test")
    parts = [(images(3, (3072,), seed=i), labels(3, seed=10 + i)) for i in range(5)]
    for i, (xi, yi) in enumerate(parts, 1):
        write(tmp_path / sub / f"data_batch_{i}", writer(xi, yi.tolist()))
    train = load_dataset(tmp_path, split="train")
    check(train, np.concatenate([p[0] for p in parts]).reshape(15, 3, 32, 32),
          np.concatenate([p[1] for p in parts]), "cifar10-train")


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-bin"])
def test_cifar_binary_batches(tmp_path, sub):
    x, y = images(6, (3072,)), labels(6)
    write(tmp_path / sub / "test_batch.bin", cifar_bin(x, y))
    check(load_dataset(tmp_path), x.reshape(6, 3, 32, 32), y, "cifar10-test")
    parts = [(images(2, (3072,), seed=i), labels(2, seed=10 + i)) for i in range(5)]
    for i, (xi, yi) in enumerate(parts, 1):
        write(tmp_path / sub / f"data_batch_{i}.bin", cifar_bin(xi, yi))
    check(load_dataset(tmp_path, split="train", limit=7),
          np.concatenate([p[0] for p in parts]).reshape(10, 3, 32, 32)[:7],
          np.concatenate([p[1] for p in parts])[:7], "cifar10-train")


def test_npz_layouts(tmp_path):
    y = labels(5)
    gray = images(5, (28, 28))
    np.savez(tmp_path / "gray.npz", x=gray, y=y)
    check(load_dataset(tmp_path / "gray.npz"), gray[:, None], y, "gray.npz")
    nhwc = images(5, (32, 32, 3))
    np.savez_compressed(tmp_path / "nhwc.npz", x=nhwc, y=y.astype(np.int32))
    check(load_dataset(tmp_path / "nhwc.npz"), nhwc.transpose(0, 3, 1, 2), y, "nhwc.npz")
    nchw = np.random.default_rng(0).uniform(-1, 2, size=(5, 3, 8, 8))  # floats are kept as they are
    np.savez(tmp_path / "float.npz", x=nchw, y=y.astype(np.float64)[:, None])
    ds = load_dataset(tmp_path / "float.npz", split="train")
    np.testing.assert_array_equal(ds.x.numpy(), nchw.astype(np.float32))
    assert ds.y.tolist() == y.tolist() and ds.num_classes == 10
    flat = np.random.default_rng(0).uniform(size=(5, 12)).astype(np.float32)
    np.savez(tmp_path / "flat.npz", x=flat, y=np.array([0, 1, 2, 3, 11]))
    ds = load_dataset(tmp_path / "flat.npz")
    assert ds.x.shape == (5, 12) and ds.num_classes == 12
    np.savez(tmp_path / "partial.npz", images=images(3, (3, 32, 32)), labels=labels(8),
             class_names=np.array(list("abcdefghij")))
    ds = load_dataset(tmp_path / "partial.npz")
    assert ds.x.shape == (3, 3, 32, 32) and ds.y.tolist() == labels(8)[:3].tolist() and ds.num_classes == 10


# ---------------------------------------------------------------------------------------------------------
# bad inputs: one clear line each
# ---------------------------------------------------------------------------------------------------------
def test_missing_path_and_unknown_layout(tmp_path):
    bad(tmp_path / "nowhere", match="not found")
    message = bad(tmp_path, match="unknown data layout")
    assert "MNIST" in message and "t10k-images-idx3-ubyte" in message and "CIFAR-10" in message
    (tmp_path / "notes.txt").write_text("hello")
    bad(tmp_path / "notes.txt", match=r"\.npz")
    bad(tmp_path, "validation", match="split must be one of test, train")


@pytest.mark.parametrize("limit", [0, -3, 2.5, True, "5"])
def test_bad_limit(limit):
    bad(None, limit=limit, match="limit must be a positive")


def test_corrupt_idx_files(tmp_path):
    x, y = images(3, (28, 28)), labels(3)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_images(x, magic=2049))
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_labels(y))
    assert "magic number 2049, expected 2051" in bad(tmp_path, match="not an IDX image file")
    write(tmp_path / "t10k-images-idx3-ubyte", idx_images(x)[:-10])
    bad(tmp_path, match="truncated or corrupt")
    write(tmp_path / "t10k-images-idx3-ubyte", b"\x00\x00")
    bad(tmp_path, match="too short")
    write(tmp_path / "t10k-images-idx3-ubyte", gzip.compress(idx_images(x))[:-8])
    bad(tmp_path, match="gzip")
    write(tmp_path / "t10k-images-idx3-ubyte", idx_images(x))
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_labels(labels(4)))
    assert "3 images but" in bad(tmp_path, match="4 labels")
    bad(tmp_path, "train", match="not train-images-idx3-ubyte")


def test_mixed_or_incomplete_directories(tmp_path):
    write_mnist(tmp_path)
    write(tmp_path / "test_batch.bin", cifar_bin(images(1, (3072,)), labels(1)))
    bad(tmp_path, match="both MNIST and CIFAR-10")
    cifar = tmp_path / "cifar"
    write(cifar / "data_batch_1", py3_cifar_pickle(images(2, (3072,)), [1, 2]))
    write(cifar / "test_batch", py3_cifar_pickle(images(2, (3072,)), [1, 2]))
    assert "data_batch_2, data_batch_3" in bad(cifar, "train", match="for the train split")
    write(cifar / "test_batch", py3_cifar_pickle(images(2, (3072,)), [1, 2, 3]))
    bad(cifar, match="2 images but 3 labels")
    write(cifar / "test_batch", b"garbage, not a pickle")
    bad(cifar, match="not a CIFAR-10 python batch")
    binary = tmp_path / "bin"
    write(binary / "test_batch.bin", cifar_bin(images(2, (3072,)), labels(2))[:-1])
    bad(binary, match="not a CIFAR-10 binary batch")


def test_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    write(tmp_path / "test_batch", pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2))
    assert "not allowed" in bad(tmp_path, match="not a CIFAR-10 python batch")
    assert not marker.exists()


def test_bad_labels_and_arrays(tmp_path):
    x = images(4, (28, 28))
    cases = {
        "nolabels": ({"x": x, "z": np.zeros(4)}, "must hold arrays 'x'"),
        "count": ({"x": x, "y": np.zeros(3, np.int64)}, "4 images but 3 labels"),
        "fractional": ({"x": x, "y": np.array([0, 1.5, 2, 3])}, "labels must be integers"),
        "strings": ({"x": x, "y": np.array(["a", "b", "c", "d"])}, "labels must be integers"),
        "negative": ({"x": x, "y": np.array([0, -1, 2, 3])}, "non-negative"),
        "matrix": ({"x": x, "y": np.zeros((4, 2), np.int64)}, "one integer per example"),
        "int_images": ({"x": x.astype(np.int64), "y": np.zeros(4, np.int64)}, "uint8"),
        "nan": ({"x": np.full((4, 2), np.nan), "y": np.zeros(4, np.int64)}, "NaN"),
        "empty": ({"x": np.zeros((0, 1, 28, 28), np.float32), "y": np.zeros(0, np.int64)}, "no examples"),
        "range": ({"images": x, "labels": np.array([0, 1, 2, 3]), "class_names": np.array(["a", "b"])},
                  "out of range for 2 classes"),
        "vector": ({"x": np.zeros(4), "y": np.zeros(4, np.int64)}, "at least one axis per example"),
    }
    for name, (arrays, match) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        bad(tmp_path / f"{name}.npz", match=match)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    bad(tmp_path / "broken.npz", match="cannot read")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4, np.int64))
    bad(tmp_path / "objects.npz", match="cannot read")
