"""The one data module: image classification data for the sweeps' problems
(:mod:`bea.problems`) and the training experiments of Section 6 (:mod:`bea.nn`).

* ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, shipped with
  scikit-learn, no download). :func:`digits` gives them as they ship (pixels 0..16, the
  problems' source); :func:`load_digits` splits them 1297 train / 500 test with a fixed
  permutation and standardises them (training).
* ``cifar10`` / ``cifar100``: read from a local directory in the standard python-pickle
  layout of https://www.cs.toronto.edu/~kriz/cifar.html::

      DATA_DIR/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
      DATA_DIR/cifar-100-python/train, test

Images are returned as float arrays ``(n, channels, height, width)`` standardised with
the per-channel mean and standard deviation of the training set; labels are int32.
"""

from __future__ import annotations

import os
import pickle
from typing import NamedTuple

import numpy as np
from jaxtyping import Float, Int

__all__ = [
    "Dataset",
    "DataError",
    "DATASET_NAMES",
    "CIFAR_FILES",
    "cifar_files",
    "load_dataset",
    "digits",
    "NUM_DIGITS",
    "load_digits",
    "load_cifar",
    "write_cifar_pickles",
]

DATASET_NAMES = ("digits", "cifar10", "cifar100")

CIFAR_FILES = {
    "cifar10": [os.path.join("cifar-10-batches-py", f"data_batch_{i}") for i in range(1, 6)]
    + [os.path.join("cifar-10-batches-py", "test_batch")],
    "cifar100": [os.path.join("cifar-100-python", "train"),
                 os.path.join("cifar-100-python", "test")],
}


class DataError(Exception):
    """A data set cannot be loaded (missing file, wrong layout); the message names why."""


class Dataset(NamedTuple):
    x_train: Float[np.ndarray, "n c h w"]
    y_train: Int[np.ndarray, " n"]
    x_test: Float[np.ndarray, "m c h w"]
    y_test: Int[np.ndarray, " m"]
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])


def _standardise(x_train, x_test, dtype):
    x_train = x_train.astype(np.float64)
    x_test = x_test.astype(np.float64)
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True) + 1e-8
    return ((x_train - mean) / std).astype(dtype), ((x_test - mean) / std).astype(dtype)


NUM_DIGITS = 1797
"""The number of examples in scikit-learn's digits."""


def digits() -> tuple[Float[np.ndarray, "1797 8 8"], Int[np.ndarray, " 1797"]]:
    """scikit-learn's digits as they ship: images (1797, 8, 8), float64 pixels in
    0..16, and their labels 0..9, in scikit-learn's order."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    return d.images, d.target


def load_digits(dtype=np.float32, test_size: int = 500) -> Dataset:
    """scikit-learn's digits (:func:`digits`) as 1x8x8 images, fixed split (seed 0),
    standardised with the training set's mean and standard deviation."""
    images, target = digits()
    x = images[:, None, :, :]
    y = target.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(y))
    test, train = perm[:test_size], perm[test_size:]
    x_train, x_test = _standardise(x[train], x[test], dtype)
    return Dataset(x_train, y[train], x_test, y[test], 10)


def cifar_files(data_dir: str, name: str) -> list[str]:
    """Absolute paths of the pickles of ``name``; DataError naming the first missing one."""
    paths = [os.path.join(data_dir, f) for f in CIFAR_FILES[name]]
    for p in paths:
        if not os.path.isfile(p):
            raise DataError(f"missing data file {p} (expected the python-pickle layout of "
                            f"{name}; see --data-dir)")
    return paths


def _unpickle(path: str) -> dict:
    """The dict in a CIFAR pickle; DataError naming the file if it is unreadable, damaged
    or truncated, or holds anything but a dict."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror or type(e).__name__})") from None
    except Exception as e:  # noqa: BLE001 - pickle raises many types on a damaged file
        what = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise DataError(f"{path} is not a readable pickle (damaged or truncated: {what})") \
            from None
    if not isinstance(d, dict):
        raise DataError(f"{path} holds a {type(d).__name__}, not a CIFAR pickle's dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def load_cifar(data_dir: str, name: str, dtype=np.float32) -> Dataset:
    """CIFAR-10 or CIFAR-100 (fine labels) from ``data_dir`` in the python-pickle layout."""
    paths = cifar_files(data_dir, name)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    parts = []
    for p in paths:
        d = _unpickle(p)
        if "data" not in d or label_key not in d:
            raise DataError(f"{p} is not a {name} pickle (no 'data'/{label_key!r} entry)")
        try:
            x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[label_key], dtype=np.int32).reshape(-1)
        except (ValueError, TypeError) as e:
            raise DataError(f"{p} is not a {name} pickle ({str(e)[:120]})") from None
        if len(x) != len(y):
            raise DataError(f"{p} has {len(x)} images but {len(y)} labels")
        parts.append((x, y))
    x_train = np.concatenate([x for x, _ in parts[:-1]])
    y_train = np.concatenate([y for _, y in parts[:-1]])
    x_test, y_test = parts[-1]
    x_train, x_test = _standardise(x_train, x_test, dtype)
    return Dataset(x_train, y_train, x_test, y_test, 10 if name == "cifar10" else 100)


def load_dataset(
    name: str, data_dir: str | None = None, dtype=np.float32, train_size: int | None = None,
    test_size: int | None = None,
) -> Dataset:
    """Load ``name`` (one of DATASET_NAMES); optionally keep only the first ``train_size``
    training and ``test_size`` test examples (the standardisation uses the whole set)."""
    if name == "digits":
        ds = load_digits(dtype)
    elif name in ("cifar10", "cifar100"):
        if data_dir is None:
            raise DataError(f"--data-dir is required for {name}")
        ds = load_cifar(data_dir, name, dtype)
    else:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASET_NAMES)}")
    if train_size is not None:
        ds = ds._replace(x_train=ds.x_train[:train_size], y_train=ds.y_train[:train_size])
    if test_size is not None:
        ds = ds._replace(x_test=ds.x_test[:test_size], y_test=ds.y_test[:test_size])
    return ds


def write_cifar_pickles(
    data_dir: str, name: str, n_train: int, n_test: int, seed: int = 0
) -> None:
    """Write a random data set in the on-disk layout of ``name`` (for tests)."""
    rng = np.random.default_rng(seed)
    k = 10 if name == "cifar10" else 100
    label_key = b"labels" if name == "cifar10" else b"fine_labels"
    files = CIFAR_FILES[name]
    n_parts = len(files) - 1
    sizes = [n_train // n_parts + (i < n_train % n_parts) for i in range(n_parts)] + [n_test]
    for f, n in zip(files, sizes, strict=True):
        path = os.path.join(data_dir, f)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             label_key: [int(v) for v in rng.integers(0, k, n)]}
        with open(path, "wb") as fh:
            pickle.dump(d, fh)
