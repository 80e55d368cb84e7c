"""In-memory split containers and the deterministic stratified splitter.

Every dataset ends up as uint8 (or small-integer) arrays in NCHW order; :func:`make_splits` turns
them into float32 tensors in [0, 1] (``x / max_value``), carves the validation (and, for sets
without an official test split, the test) split out by class, and computes per-channel mean/std
exactly on the train split from a histogram of the integer pixel values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

#: Test fraction used for datasets that ship without an official test split (70/10/20 by default).
DEFAULT_TEST_FRACTION = 0.2


class TensorSplit(TensorDataset):
    """One split held in memory: ``x`` float32 (N, C, H, W) in [0, 1], ``y`` int64 (N,).

    A ``TensorDataset`` (so it works with ``torch.utils.data.DataLoader``) with ``.x``/``.y``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if x.dtype != torch.float32 or x.dim() != 4:
            raise ValueError(f"x must be float32 NCHW, got {x.dtype} with shape {tuple(x.shape)}")
        if y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
            raise ValueError(f"y must be int64 of shape ({x.shape[0]},), "
                             f"got {y.dtype} {tuple(y.shape)}")
        super().__init__(x, y)

    @property
    def x(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def y(self) -> torch.Tensor:
        return self.tensors[1]


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """A loaded dataset: three in-memory splits plus the facts a model and a trainer need.

    ``mean``/``std`` are per channel, computed on ``train`` (pixels in [0, 1]); the tensors are NOT
    normalised -- apply :func:`lowbit.data.normalize` (after augmentation) yourself.
    """

    name: str
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    num_classes: int
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()

    def __post_init__(self):
        for split in ("train", "val", "test"):
            shape = tuple(getattr(self, split).x.shape[1:])
            if shape != (self.in_chans, self.img_size, self.img_size):
                raise ValueError(f"{self.name}: {split} has sample shape {shape}, "
                                 f"expected {(self.in_chans, self.img_size, self.img_size)}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"{self.name}: mean/std need {self.in_chans} values, "
                             f"got {self.mean}, {self.std}")

    @property
    def sizes(self) -> dict[str, int]:
        """Number of samples per split, e.g. ``{"train": 1257, "val": 180, "test": 360}``."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def stratified_split(y: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Split indices of ``y`` by class into ``len(fractions) + 1`` sorted index arrays.

    Part ``k`` gets ``round(fractions[k] * n_c)`` samples of every class ``c`` (round half up);
    the last part (train) gets the rest. Classes are visited in sorted order and each is shuffled
    with ``numpy.random.default_rng(seed)``, so the same ``(y, fractions, seed)`` gives the same
    indices on every platform.
    """
    if any(f < 0 for f in fractions) or sum(fractions) >= 1:
        raise ValueError(f"split fractions must be >= 0 and sum to < 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for k, frac in enumerate(fractions):
            n = min(int(np.floor(frac * len(idx) + 0.5)), len(idx) - start)
            parts[k].append(idx[start:start + n])
            start += n
        parts[-1].append(idx[start:])
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def channel_stats(x: np.ndarray, max_value: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of ``x / max_value`` for integer NCHW ``x``."""
    means, stds = [], []
    levels = np.arange(max_value + 1, dtype=np.float64) / max_value
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].ravel(), minlength=max_value + 1).astype(np.float64)
        total = max(counts.sum(), 1.0)
        mean = (counts * levels).sum() / total
        var = (counts * (levels - mean) ** 2).sum() / total
        means.append(float(mean))
        stds.append(float(np.sqrt(var)) if var > 0 else 1.0)
    return tuple(means), tuple(stds)


def _to_split(x: np.ndarray, y: np.ndarray, max_value: int) -> TensorSplit:
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:  # e.g. np.frombuffer over file bytes; torch wants writable memory
        x = x.copy()
    xt = torch.from_numpy(x).to(torch.float32).div_(max_value)
    return TensorSplit(xt, torch.from_numpy(np.asarray(y, dtype=np.int64).copy()))


def make_splits(name: str, x: np.ndarray, y: np.ndarray, *, num_classes: int, val_fraction: float,
                seed: int, x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
                x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                test_fraction: float = DEFAULT_TEST_FRACTION, max_value: int = 255,
                classes: tuple[str, ...] = ()) -> DatasetSplits:
    """Build :class:`DatasetSplits` from integer NCHW arrays with values in ``[0, max_value]``.

    With an official test set (``x_test``), ``val_fraction`` of ``x`` (per class) becomes ``val``.
    Without one, ``x`` is split into ``test_fraction`` test, ``val_fraction`` val and the rest
    train -- all fractions of the whole set (70/10/20 with the defaults). A given ``x_val`` (only
    with ``x_test``) is used as is and ``x`` becomes train whole.
    """
    x, y = np.asarray(x), np.asarray(y, dtype=np.int64)
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(f"{name}: expected square NCHW images, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.unsignedinteger):
        raise ValueError(f"{name}: expected unsigned integer pixels, got {x.dtype}")
    for labels in (y, y_test, y_val):
        if labels is None or not len(labels):
            continue
        if not 0 <= labels.min() <= labels.max() < num_classes:
            raise ValueError(f"{name}: labels must lie in [0, {num_classes}), got "
                             f"[{labels.min()}, {labels.max()}]")
    if x_test is None:
        val_idx, test_idx, train_idx = stratified_split(y, (val_fraction, test_fraction), seed)
        x_test, y_test = x[test_idx], y[test_idx]
    elif x_val is None:
        val_idx, train_idx = stratified_split(y, (val_fraction,), seed)
    else:
        val_idx, train_idx = None, slice(None)
    if val_idx is not None:
        x_val, y_val = x[val_idx], y[val_idx]
    x_train = x[train_idx]
    mean, std = channel_stats(x_train, max_value)
    return DatasetSplits(
        name=name,
        train=_to_split(x_train, y[train_idx], max_value),
        val=_to_split(x_val, y_val, max_value),
        test=_to_split(x_test, y_test, max_value),
        num_classes=num_classes, in_chans=x.shape[1], img_size=x.shape[2],
        mean=mean, std=std, classes=tuple(classes))
