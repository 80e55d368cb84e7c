"""CIFAR-10 and CIFAR-100 from the official "python version" archives.

Layout under ``root`` (default ``$LOWBIT_DATA`` or ``~/.cache/lowbit/data``): either the extracted
folder (``cifar-10-batches-py/`` with data_batch_1..5, test_batch, batches.meta;
``cifar-100-python/`` with train, test, meta) or the archive (``cifar-10-python.tar.gz`` /
``cifar-100-python.tar.gz``), which is extracted next to itself with :func:`safe_extract`.

Each batch file is a Python-2 pickle of a dict: ``b"data"`` uint8 (N, 3072) whose rows hold the
1024 red, then 1024 green, then 1024 blue values of a row-major 32x32 image (so a reshape to
(N, 3, 32, 32) is exact), and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"``/``b"coarse_labels"``
(CIFAR-100). Pickles are only read from these official files, through an unpickler that only
allows the numpy array constructors the files use.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from lowbit.data.fetch import fetch_or_explain, safe_extract
from lowbit.data.registry import register_dataset, resolve_root
from lowbit.data.splits import DatasetSplits, make_splits

_URL = "https://www.cs.toronto.edu/~kriz/"
_SPECS = {  # name: (archive, published md5, folder, train files, test files, meta file)
    "cifar10": ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py",
                tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta"),
    "cifar100": ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python",
                 ("train",), ("test",), "meta"),
}
_PICKLE_GLOBALS = {  # everything an official CIFAR pickle (or a re-pickled copy) may reference
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        obj = _ArrayUnpickler(f, encoding="bytes").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _read_batches(folder: Path, files: tuple[str, ...],
                  label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for fname in files:
        batch = _load_pickle(folder / fname)
        if b"data" not in batch or label_key not in batch:
            raise ValueError(f"{folder / fname}: missing key b'data' or {label_key!r}")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{folder / fname}: b'data' must be (N, 3072) uint8, got {data.shape}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _ensure_folder(name: str, root: Path, download: bool) -> Path:
    archive, md5, folder_name, train, test, _ = _SPECS[name]
    folder = root / folder_name
    needed = train + test
    if all((folder / f).is_file() for f in needed):
        return folder
    tar = root / archive
    if not tar.is_file():
        hint = (f"put {archive} (from {_URL}{archive}) or its extracted folder {folder_name}/ "
                f"in {root}")
        fetch_or_explain(name, _URL + archive, tar, md5, download, hint)
    safe_extract(tar, root)
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{name}: {tar} did not contain {folder_name}/{missing[0]}")
    return folder


def _class_names(path: Path, key: bytes) -> tuple[str, ...]:
    if not path.is_file():
        return ()
    names = _load_pickle(path).get(key, ())
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _load_cifar(name: str, root, val_fraction: float, seed: int, download: bool,
                label_key: bytes, names_key: bytes, num_classes: int) -> DatasetSplits:
    root = resolve_root(root)
    folder = _ensure_folder(name, root, download)
    _, _, _, train, test, meta = _SPECS[name]
    x, y = _read_batches(folder, train, label_key)
    x_test, y_test = _read_batches(folder, test, label_key)
    return make_splits(name, x, y, x_test=x_test, y_test=y_test, num_classes=num_classes,
                       val_fraction=val_fraction, seed=seed,
                       classes=_class_names(folder / meta, names_key))


@register_dataset("cifar10")
def load_cifar10(root, val_fraction: float, seed: int, download: bool = True) -> DatasetSplits:
    """CIFAR-10: 3 x 32 x 32, 10 classes, 50000 official train / 10000 test images."""
    return _load_cifar("cifar10", root, val_fraction, seed, download, b"labels", b"label_names", 10)


@register_dataset("cifar100")
def load_cifar100(root, val_fraction: float, seed: int, download: bool = True,
                  label_type: str = "fine") -> DatasetSplits:
    """CIFAR-100: 3 x 32 x 32; ``label_type`` "fine" (100 classes) or "coarse" (20 superclasses)."""
    if label_type not in ("fine", "coarse"):
        raise ValueError(f"label_type must be 'fine' or 'coarse', got {label_type!r}")
    key = label_type.encode()
    return _load_cifar("cifar100", root, val_fraction, seed, download, key + b"_labels",
                       key + b"_label_names", 100 if label_type == "fine" else 20)
