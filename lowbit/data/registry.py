"""Dataset registry: a dict of loader functions, a decorator to fill it, and ``load_dataset``.

A loader is ``fn(root, val_fraction, seed, **kw) -> DatasetSplits``; ``root`` is passed through
as given (``None`` allowed) and resolved by the loader with :func:`resolve_root`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from lowbit.data.splits import DatasetSplits, TensorSplit
from lowbit.registry import Registry

__all__ = ["DatasetSplits", "TensorSplit", "register_dataset", "load_dataset", "list_datasets",
           "default_root", "resolve_root"]

Loader = Callable[..., DatasetSplits]
DATASETS = Registry("dataset")


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator: register ``fn(root, val_fraction, seed, **kw) -> DatasetSplits`` as ``name``."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    """Sorted names of all registered datasets."""
    return DATASETS.names()


def default_root() -> Path:
    """``$LOWBIT_DATA`` if set, else ``~/.cache/lowbit/data``."""
    return Path(os.environ.get("LOWBIT_DATA") or "~/.cache/lowbit/data").expanduser()


def resolve_root(root: str | os.PathLike | None) -> Path:
    """``root`` as a ``Path`` (``~`` expanded), or :func:`default_root` when ``None``."""
    return Path(root).expanduser() if root is not None else default_root()


def load_dataset(name: str, root: str | os.PathLike | None = None, val_fraction: float = 0.1,
                 seed: int = 0, **kw) -> DatasetSplits:
    """Load dataset ``name`` fully into memory and split it deterministically from ``seed``.

    ``val_fraction`` is per class: of the official train set where there is an official test
    set (cifar10/100, mnist, fashion-mnist), else of the whole set (digits, mnist-small and
    imagefolder without sub-folders, whose test split is ``test_fraction=0.2``: 70/10/20).
    Extra keywords go to the loader (``download=False``, ``label_type="coarse"``, ``img_size``...).
    """
    loader = DATASETS.get(name)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    return loader(root, val_fraction, seed, **kw)
