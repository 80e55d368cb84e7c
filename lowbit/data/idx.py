"""MNIST and Fashion-MNIST from the official IDX files (raw or ``.gz``).

IDX format (http://yann.lecun.com/exdb/mnist/): a big-endian 32-bit magic ``0x000008NN`` (0x08 =
unsigned byte data, NN = number of dimensions), then NN big-endian uint32 sizes, then the data in
row-major order. Images use magic 0x00000803 (N, 28, 28), labels 0x00000801 (N,).

Files are looked up in ``root/<name>/`` and then ``root/`` (default root: ``$LOWBIT_DATA`` or
``~/.cache/lowbit/data``), raw before ``.gz``. Missing files are downloaded (as ``.gz``, MD5
checked against the checksums published with the datasets) into ``root/<name>/`` when
``download=True``.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from lowbit.data.fetch import fetch_or_explain
from lowbit.data.registry import register_dataset, resolve_root
from lowbit.data.splits import DatasetSplits, make_splits

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_SOURCES = {  # name: (mirror, md5 of each .gz in _FILES order, class names)
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
               "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
              tuple(str(d) for d in range(10))),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                       "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
                      ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                       "Sneaker", "Bag", "Ankle boot")),
}


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an IDX file (``.gz`` decompressed) whose magic must equal ``magic``; uint8 array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        buf = f.read()
    got = int.from_bytes(buf[:4], "big") if len(buf) >= 4 else None
    if got != magic:
        shown = "missing" if got is None else f"0x{got:08x}"
        raise ValueError(f"{path}: bad IDX magic {shown}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(f"{path}: IDX header truncated ({len(buf)} bytes)")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    data = np.frombuffer(buf, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: IDX header says {dims} ({int(np.prod(dims))} bytes) "
                         f"but {data.size} data bytes follow")
    return data.reshape(dims)


def _find(root: Path, name: str, fname: str) -> Path | None:
    for folder in (root / name, root):
        for candidate in (folder / fname, folder / (fname + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def _locate(name: str, root: Path, download: bool) -> list[Path]:
    mirror, md5s, _ = _SOURCES[name]
    paths = []
    for fname, md5 in zip(_FILES, md5s):
        path = _find(root, name, fname)
        if path is None:
            hint = (f"put {', '.join(f + '[.gz]' for f in _FILES)} (from {mirror}) "
                    f"in {root / name}")
            path = fetch_or_explain(name, mirror + fname + ".gz", root / name / (fname + ".gz"),
                                    md5, download, hint)
        paths.append(path)
    return paths


def _load_idx_dataset(name: str, root, val_fraction: float, seed: int,
                      download: bool) -> DatasetSplits:
    tr_x, tr_y, te_x, te_y = _locate(name, resolve_root(root), download)
    x, y = read_idx(tr_x, IMAGES_MAGIC), read_idx(tr_y, LABELS_MAGIC)
    x_test, y_test = read_idx(te_x, IMAGES_MAGIC), read_idx(te_y, LABELS_MAGIC)
    for images, labels, path in ((x, y, tr_y), (x_test, y_test, te_y)):
        if len(images) != len(labels):
            raise ValueError(f"{path}: {len(labels)} labels for {len(images)} images")
    return make_splits(name, x[:, None], y.astype(np.int64), x_test=x_test[:, None],
                       y_test=y_test.astype(np.int64), num_classes=10, val_fraction=val_fraction,
                       seed=seed, classes=_SOURCES[name][2])


@register_dataset("mnist")
def load_mnist(root, val_fraction: float, seed: int, download: bool = True) -> DatasetSplits:
    """MNIST: 1 x 28 x 28, 10 classes, 60000 official train / 10000 test images."""
    return _load_idx_dataset("mnist", root, val_fraction, seed, download)


@register_dataset("fashion-mnist")
def load_fashion_mnist(root, val_fraction: float, seed: int,
                       download: bool = True) -> DatasetSplits:
    """Fashion-MNIST: 1 x 28 x 28, 10 classes, 60000 official train / 10000 test images."""
    return _load_idx_dataset("fashion-mnist", root, val_fraction, seed, download)
