"""``imagefolder``: any folder of class sub-folders holding images, read with PIL.

Layouts under ``root`` (required):

* ``root/<class>/*.png`` -- one pool, split per class 70/10/20 (``val_fraction``,
  ``test_fraction``);
* ``root/train/<class>/...`` alone -- the same, with ``train/`` as the pool;
* ``root/train/<class>/...`` plus ``root/test/<class>/...`` -- val carved out of train;
* ``root/train/`` plus ``root/val/`` (no ``test/``) -- ``val/`` is the held-out test split (the
  ImageNet convention: its "val" set is what results are reported on); val carved out of train;
* ``root/train/``, ``root/val/`` and ``root/test/`` -- used as they are.

Class names are the sorted sub-folder names of the train folder (index = position); every
image (searched recursively, by extension) is converted to RGB or grayscale and resized to
``img_size x img_size`` with bilinear filtering (aspect ratio not kept). Loading happens once,
up front; the result lives in memory like every other dataset.

A file with an image extension that PIL cannot read (truncated, corrupt, not an image) is, by
``on_bad_file``: ``"skip"`` (the default) left out with a ``UserWarning`` naming it, or
``"error"``: a one-line ``ValueError`` naming it. In a sweep config: ``data: {on_bad_file: error}``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from lowbit.data.registry import register_dataset
from lowbit.data.splits import DEFAULT_TEST_FRACTION, DatasetSplits, make_splits

ON_BAD_FILE = ("skip", "error")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm")


def find_classes(folder: Path) -> tuple[str, ...]:
    """Sorted names of the non-hidden sub-folders of ``folder``."""
    classes = tuple(sorted(p.name for p in folder.iterdir()
                           if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise FileNotFoundError(f"imagefolder: no class sub-folders in {folder}")
    return classes


def _read_image(path: Path, img_size: int, grayscale: bool, on_bad_file: str = "skip"
                ) -> np.ndarray | None:
    """The image at ``path`` as uint8 (C, img_size, img_size); None when it is unreadable and
    ``on_bad_file`` is "skip" (with a warning naming it)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im = im.convert("L" if grayscale else "RGB").resize((img_size, img_size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        why = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        if on_bad_file == "error":
            raise ValueError(f"imagefolder: {str(path)!r} is not a readable image ({why}); "
                             "on_bad_file='skip' leaves such files out") from None
        warnings.warn(f"imagefolder: skipping {str(path)!r}: not a readable image ({why})",
                      UserWarning, stacklevel=2)
        return None
    return arr[None] if grayscale else arr.transpose(2, 0, 1)


def read_folder(folder: Path, classes: tuple[str, ...], img_size: int, grayscale: bool,
                on_bad_file: str = "skip") -> tuple[np.ndarray, np.ndarray]:
    """All images under ``folder/<class>/`` as uint8 (N, C, img_size, img_size) and int64 labels."""
    unknown = sorted(set(find_classes(folder)) - set(classes))
    if unknown:
        raise ValueError(f"imagefolder: {folder} has classes {unknown} that the train folder lacks")
    images, labels = [], []
    for index, cls in enumerate(classes):
        if not (folder / cls).is_dir():
            continue
        for path in sorted((folder / cls).rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                image = _read_image(path, img_size, grayscale, on_bad_file)
                if image is not None:
                    images.append(image)
                    labels.append(index)
    if not images:
        raise FileNotFoundError(f"imagefolder: no readable images ({'/'.join(IMAGE_EXTENSIONS)}) "
                                f"in {folder}")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


@register_dataset("imagefolder")
def load_imagefolder(root, val_fraction: float, seed: int, img_size: int = 32,
                     grayscale: bool = False,
                     test_fraction: float = DEFAULT_TEST_FRACTION,
                     on_bad_file: str = "skip") -> DatasetSplits:
    """Images under ``root`` (layouts: module doc), resized square, 1 (grayscale) or 3 channels;
    ``on_bad_file``: "skip" or "error" for unreadable files (module doc)."""
    if on_bad_file not in ON_BAD_FILE:
        raise ValueError(f"on_bad_file: expected one of {', '.join(ON_BAD_FILE)}, got {on_bad_file!r}")
    if root is None:
        raise ValueError("imagefolder needs root=<folder with one sub-folder per class>")
    if not isinstance(img_size, int) or img_size < 1:
        raise ValueError(f"img_size must be a positive int, got {img_size!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder: root {root} is not a folder")
    train_dir = root / "train" if (root / "train").is_dir() else root
    val_dir, test_dir = root / "val", root / "test"
    has_val = train_dir != root and val_dir.is_dir()
    has_test = train_dir != root and test_dir.is_dir()
    if has_val and not has_test:
        val_dir, test_dir, has_val, has_test = None, val_dir, False, True
    classes = find_classes(train_dir)
    x, y = read_folder(train_dir, classes, img_size, grayscale, on_bad_file)
    extra = {}
    if has_test:
        extra["x_test"], extra["y_test"] = read_folder(test_dir, classes, img_size, grayscale, on_bad_file)
    if has_val:
        extra["x_val"], extra["y_val"] = read_folder(val_dir, classes, img_size, grayscale, on_bad_file)
    return make_splits("imagefolder", x, y, num_classes=len(classes), val_fraction=val_fraction,
                       seed=seed, test_fraction=test_fraction, classes=classes, **extra)
