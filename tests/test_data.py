"""Tests for lowbit.data: registry, official file formats, splits, augmentation, batching.

File-based datasets are exercised on tiny files written here in exactly the official formats
(CIFAR python pickles and archives, MNIST IDX raw and gzip), so nothing is downloaded.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import urllib.error

import numpy as np
import pytest
import torch

from lowbit.data import (DatasetSplits, get_augmentation, iterate_batches, list_augmentations,
                         list_datasets, load_dataset, normalize)
from lowbit.data import augment, fetch

# ---------------------------------------------------------------- writers for official formats


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the official files are Python-2 pickles


def _cifar_images(rng, n):
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def write_cifar10(root, n_per_batch=6, archive=False, seed=0):
    """data_batch_1..5 + test_batch + batches.meta; returns (train images, train labels, test ...)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = _cifar_images(rng, n_per_batch)
        y = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        _pickle(folder / name, {b"batch_label": name.encode(), b"labels": y,
                                b"data": x.reshape(n_per_batch, 3072),
                                b"filenames": [b"img%d.png" % i for i in range(n_per_batch)]})
        xs.append(x)
        ys.append(y)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    _pickle(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": n_per_batch,
                                      b"num_vis": 3072})
    if archive:
        _tar_and_remove(folder, root / "cifar-10-python.tar.gz")
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], np.array(ys[5])


def write_cifar100(root, n=12, archive=False, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = []
    for name in ("train", "test"):
        x = _cifar_images(rng, n)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        coarse = [f // 5 for f in fine]
        _pickle(folder / name, {b"filenames": [b"f"] * n, b"batch_label": name.encode(),
                                b"fine_labels": fine, b"coarse_labels": coarse,
                                b"data": x.reshape(n, 3072)})
        out += [x, np.array(fine), np.array(coarse)]
    _pickle(folder / "meta", {b"fine_label_names": [b"c%d" % i for i in range(100)],
                              b"coarse_label_names": [b"s%d" % i for i in range(20)]})
    if archive:
        _tar_and_remove(folder, root / "cifar-100-python.tar.gz")
    return out


def _tar_and_remove(folder, archive):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()


def _idx_bytes(arr, magic):
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def write_idx(folder, n_train=20, n_test=10, gz=False, seed=0):
    """The four official IDX files (optionally .gz) with images whose pixel [0,0] encodes index."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        data[prefix] = (images, labels)
        for fname, arr, magic in ((f"{prefix}-images-idx3-ubyte", images, 0x803),
                                  (f"{prefix}-labels-idx1-ubyte", labels, 0x801)):
            raw = _idx_bytes(arr, magic)
            if gz:
                with gzip.open(folder / (fname + ".gz"), "wb") as f:
                    f.write(raw)
            else:
                (folder / fname).write_bytes(raw)
    return data


def write_imagefolder(root, classes=("cat", "dog", "eel"), per_class=5, size=(12, 10)):
    from PIL import Image
    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            colour = (40 * k + i, 200 - 30 * k, 10 * i)
            Image.new("RGB", size, colour).save(root / cls / f"{i}.png")


# one maker per registered dataset: a new dataset without a test here fails test_registry_covered
MAKERS = {
    "digits": lambda tmp: {},
    "mnist-small": lambda tmp: {},
    "cifar10": lambda tmp: (write_cifar10(tmp), {"root": tmp, "download": False})[1],
    "cifar100": lambda tmp: (write_cifar100(tmp), {"root": tmp, "download": False})[1],
    "mnist": lambda tmp: (write_idx(tmp / "mnist"), {"root": tmp, "download": False})[1],
    "fashion-mnist": lambda tmp: (write_idx(tmp / "fashion-mnist", gz=True),
                                  {"root": tmp, "download": False})[1],
    "imagefolder": lambda tmp: (write_imagefolder(tmp), {"root": tmp, "img_size": 8})[1],
}

# ---------------------------------------------------------------- registry and every dataset


def test_registry_covered():
    assert sorted(MAKERS) == list_datasets()


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_every_dataset_contract(name, tmp_path):
    s = load_dataset(name, **MAKERS[name](tmp_path))
    assert isinstance(s, DatasetSplits) and s.name == name
    for split in (s.train, s.val, s.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (s.in_chans, s.img_size, s.img_size)
        if len(split):  # tiny fixtures can leave val empty
            assert 0 <= split.x.min() and split.x.max() <= 1
            assert split.y.min() >= 0 and split.y.max() < s.num_classes
    assert len(s.mean) == len(s.std) == s.in_chans
    torch.testing.assert_close(torch.tensor(s.mean), s.train.x.double().mean((0, 2, 3)).float())
    torch.testing.assert_close(torch.tensor(s.std), s.train.x.double().std((0, 2, 3), correction=0).float())


def test_unknown_dataset_names_allowed():
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'; allowed: .*digits"):
        load_dataset("nope")


def test_bad_val_fraction():
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.5)

# ---------------------------------------------------------------- built-in offline sets


def test_digits_shapes_and_splits():
    s = load_dataset("digits")
    assert (s.num_classes, s.in_chans, s.img_size) == (10, 1, 8)
    assert s.sizes == {"train": 1259, "val": 179, "test": 359}
    assert sum(s.sizes.values()) == 1797
    assert s.train.x.max() == 1.0  # 16 / 16
    # stratified: every class is in every split, in about the 70/10/20 proportions
    for split, frac in ((s.train, 0.7), (s.val, 0.1), (s.test, 0.2)):
        counts = torch.bincount(split.y, minlength=10).float()
        assert (counts / len(split.y) - 0.1).abs().max() < 0.01, frac


def test_digits_deterministic_per_seed():
    a, b, c = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
        assert torch.equal(getattr(a, split).y, getattr(b, split).y)
    assert not torch.equal(a.test.x, c.test.x)
    # splits are disjoint and cover everything: compare flattened images as a multiset via sums
    total = sum(getattr(a, s).x.sum() for s in ("train", "val", "test"))
    assert torch.isclose(total, sum(getattr(c, s).x.sum() for s in ("train", "val", "test")))


def test_mnist_small():
    s = load_dataset("mnist-small", seed=0)
    assert (s.num_classes, s.in_chans, s.img_size) == (10, 1, 28)
    assert s.sizes == {"train": 3500, "val": 500, "test": 1000}
    assert torch.equal(torch.bincount(s.test.y), torch.full((10,), 100))
    other = load_dataset("mnist-small", seed=1)
    assert torch.equal(s.val.x, load_dataset("mnist-small", seed=0).val.x)
    assert not torch.equal(s.val.x, other.val.x)

# ---------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("archive", [False, True])
def test_cifar10_pixels_and_labels(tmp_path, archive):
    x, y, xt, yt = write_cifar10(tmp_path, archive=archive)
    s = load_dataset("cifar10", root=tmp_path, val_fraction=0.0, download=False)
    assert (s.num_classes, s.in_chans, s.img_size) == (10, 3, 32)
    assert s.classes[0] == "airplane" and len(s.classes) == 10
    assert torch.equal(s.train.x, torch.from_numpy(x).float() / 255)  # val_fraction=0: order kept
    assert torch.equal(s.train.y, torch.from_numpy(y).long())
    assert torch.equal(s.test.x, torch.from_numpy(xt).float() / 255)
    assert torch.equal(s.test.y, torch.from_numpy(yt).long())
    assert len(s.val) == 0


def test_cifar_row_layout_is_rgb_planes_row_major(tmp_path):
    """A row holds 1024 R values, then 1024 G, then 1024 B, each 32x32 row-major."""
    write_cifar10(tmp_path, n_per_batch=1)
    folder = tmp_path / "cifar-10-batches-py"
    row = np.zeros((1, 3072), np.uint8)
    row[0, 0 * 1024 + 32 * 0 + 1] = 10    # R at (y=0, x=1)
    row[0, 1 * 1024 + 32 * 2 + 5] = 200   # G at (y=2, x=5)
    row[0, 2 * 1024 + 32 * 31 + 30] = 255  # B at (y=31, x=30)
    _pickle(folder / "test_batch", {b"data": row, b"labels": [3]})
    s = load_dataset("cifar10", root=tmp_path, download=False)
    img = (s.test.x[0] * 255).round().long()
    assert img[0, 0, 1] == 10 and img[1, 2, 5] == 200 and img[2, 31, 30] == 255
    assert img.sum() == 10 + 200 + 255 and s.test.y.tolist() == [3]


@pytest.mark.parametrize("archive", [False, True])
def test_cifar100_fine_and_coarse(tmp_path, archive):
    x, fine, coarse, xt, fine_t, coarse_t = write_cifar100(tmp_path, archive=archive)
    s = load_dataset("cifar100", root=tmp_path, val_fraction=0.0, download=False)
    assert s.num_classes == 100 and len(s.classes) == 100
    assert torch.equal(s.train.x, torch.from_numpy(x).float() / 255)
    assert torch.equal(s.test.y, torch.from_numpy(fine_t).long())
    c = load_dataset("cifar100", root=tmp_path, val_fraction=0.0, download=False, label_type="coarse")
    assert c.num_classes == 20 and c.classes[:2] == ("s0", "s1")
    assert torch.equal(c.train.y, torch.from_numpy(coarse).long())
    with pytest.raises(ValueError, match="label_type"):
        load_dataset("cifar100", root=tmp_path, download=False, label_type="medium")


def test_cifar_val_split_is_seeded(tmp_path):
    write_cifar10(tmp_path, n_per_batch=40)
    a = load_dataset("cifar10", root=tmp_path, seed=0, download=False)
    b = load_dataset("cifar10", root=tmp_path, seed=0, download=False)
    c = load_dataset("cifar10", root=tmp_path, seed=5, download=False)
    assert len(a.train) + len(a.val) == 200 and len(a.test) == 40
    assert torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)


def test_cifar_missing_files_message(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg and "cifar-10-batches-py" in msg and str(tmp_path) in msg
    assert "\n" not in msg


def test_download_failure_explains_where_to_put_files(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("network unreachable")
    monkeypatch.setattr(fetch.urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match="could not download .*cifar-100-python.tar.gz") as err:
        load_dataset("cifar100", root=tmp_path)
    assert str(tmp_path) in str(err.value)


def test_download_md5_mismatch_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"junk"))
    with pytest.raises(ValueError, match="MD5"):
        load_dataset("cifar10", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_env_var_sets_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_dataset("mnist", download=False)


def _evil_tar(path, name="../evil.txt", kind=tarfile.REGTYPE):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))


@pytest.mark.parametrize("name,kind", [("../evil.txt", tarfile.REGTYPE),
                                       ("cifar-10-batches-py/../../evil.txt", tarfile.REGTYPE),
                                       ("/tmp/evil.txt", tarfile.REGTYPE),
                                       ("cifar-10-batches-py/link", tarfile.SYMTYPE)])
def test_unsafe_tar_members_rejected(tmp_path, name, kind):
    root = tmp_path / "root"
    root.mkdir()
    _evil_tar(root / "cifar-10-python.tar.gz", name, kind)
    with pytest.raises(ValueError, match="refusing"):
        load_dataset("cifar10", root=root, download=False)
    assert not (tmp_path / "evil.txt").exists() and list(root.iterdir()) == [root / "cifar-10-python.tar.gz"]


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    write_cifar10(tmp_path, n_per_batch=1)
    _pickle(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": print, b"labels": []})
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load .*print"):
        load_dataset("cifar10", root=tmp_path, download=False)

# ---------------------------------------------------------------- MNIST IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_raw_and_gz(tmp_path, name, gz):
    data = write_idx(tmp_path / name, gz=gz)
    s = load_dataset(name, root=tmp_path, val_fraction=0.0, download=False)
    assert (s.num_classes, s.in_chans, s.img_size) == (10, 1, 28) and len(s.classes) == 10
    images, labels = data["train"]
    assert torch.equal(s.train.x[:, 0], torch.from_numpy(images).float() / 255)
    assert torch.equal(s.train.y, torch.from_numpy(labels).long())
    assert torch.equal(s.test.y, torch.from_numpy(data["t10k"][1]).long())


def test_idx_files_directly_in_root(tmp_path):
    write_idx(tmp_path)
    assert len(load_dataset("mnist", root=tmp_path, download=False).test) == 10


def test_idx_bad_magic(tmp_path):
    write_idx(tmp_path / "mnist")
    bad = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    bad.write_bytes(_idx_bytes(np.zeros((10, 28, 28), np.uint8), 0x801))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: bad IDX magic 0x00000801, expected 0x00000803"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_idx_truncated(tmp_path):
    write_idx(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="data bytes follow"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_idx_missing_message(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("fashion-mnist", root=tmp_path, download=False)
    assert str(tmp_path / "fashion-mnist") in str(err.value) and "t10k-labels-idx1-ubyte" in str(err.value)

# ---------------------------------------------------------------- imagefolder


def test_imagefolder_flat(tmp_path):
    write_imagefolder(tmp_path)
    s = load_dataset("imagefolder", root=tmp_path, img_size=8)
    assert s.classes == ("cat", "dog", "eel") and s.num_classes == 3
    assert s.train.x.shape[1:] == (3, 8, 8) and sum(s.sizes.values()) == 15
    assert s.sizes["test"] == 3  # round(0.2 * 5) per class
    first = s.train.x[s.train.y == 0][0]  # a solid colour survives the resize
    assert torch.allclose(first, first[:, :1, :1].expand_as(first))
    g = load_dataset("imagefolder", root=tmp_path, img_size=6, grayscale=True)
    assert (g.in_chans, g.img_size) == (1, 6)


def test_imagefolder_train_test_layout(tmp_path):
    write_imagefolder(tmp_path / "train", per_class=4)
    write_imagefolder(tmp_path / "test", classes=("cat", "eel"), per_class=2)
    s = load_dataset("imagefolder", root=tmp_path, img_size=4, val_fraction=0.25)
    assert s.sizes == {"train": 9, "val": 3, "test": 4}
    assert sorted(s.test.y.tolist()) == [0, 0, 2, 2]
    write_imagefolder(tmp_path / "val", classes=("dog",), per_class=1)
    s = load_dataset("imagefolder", root=tmp_path, img_size=4)
    assert s.sizes == {"train": 12, "val": 1, "test": 4}


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ValueError, match="needs root"):
        load_dataset("imagefolder")
    write_imagefolder(tmp_path / "train", classes=("a",), per_class=2)
    write_imagefolder(tmp_path / "test", classes=("zebra",), per_class=1)
    with pytest.raises(ValueError, match="zebra"):
        load_dataset("imagefolder", root=tmp_path)

# ---------------------------------------------------------------- augmentation


def _batch(c=3, size=16, n=6, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("preset", ["none", "basic", "extended"])
@pytest.mark.parametrize("chans,size", [(3, 32), (1, 8), (1, 28)])
def test_presets_shape_dtype_determinism(preset, chans, size):
    assert preset in list_augmentations()
    aug = get_augmentation(preset, size, chans)
    x = _batch(chans, size)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)
    assert 0 <= a.min() and a.max() <= 1
    if preset == "none":
        assert torch.equal(a, x)
    else:
        assert not torch.equal(a, x)
        assert not torch.equal(a, aug(x, torch.Generator().manual_seed(4)))


def test_unknown_augmentation():
    with pytest.raises(ValueError, match="unknown augmentation 'heavy'; allowed: basic, extended, none"):
        get_augmentation("heavy", 32, 3)


def test_flip_is_a_real_flip():
    x = _batch()
    assert torch.equal(augment.random_hflip(x, torch.Generator().manual_seed(0), p=1.0), x.flip(-1))
    assert torch.equal(augment.random_hflip(x, torch.Generator().manual_seed(0), p=0.0), x)
    out = augment.random_hflip(x, torch.Generator().manual_seed(1))
    for xi, oi in zip(x, out):
        assert torch.equal(oi, xi) or torch.equal(oi, xi.flip(-1))


def test_crop_is_a_window_of_the_padded_image():
    x, pad = _batch(size=8), 2
    out = augment.random_crop(x, torch.Generator().manual_seed(0), padding=pad)
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    shifts = set()
    for n in range(len(x)):
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if torch.equal(out[n], padded[n, :, dy:dy + 8, dx:dx + 8])]
        assert hits
        shifts.add(hits[0])
    assert len(shifts) > 1


def test_default_padding():
    assert [augment.default_padding(s) for s in (8, 28, 32, 224)] == [1, 3, 4, 4]


def test_rotation_zero_is_identity_and_erasing_zeroes_a_box():
    x = _batch()
    torch.testing.assert_close(augment.random_rotation(x, None, degrees=0.0), x)
    erased = augment.random_erasing(x, torch.Generator().manual_seed(0), p=1.0)
    changed = (erased != x).any(1)
    assert changed.flatten(1).any(1).all() and (erased[(erased != x)] == 0).all()


def test_explicit_cpu_generator_matches_default_generator():
    x = _batch()
    aug = get_augmentation("extended", 16, 3)
    g = torch.Generator(device="cpu").manual_seed(0)
    assert torch.equal(aug(x, g), aug(x, torch.Generator().manual_seed(0)))


def test_normalize():
    x = _batch()
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    y = normalize(x, mean, std)
    torch.testing.assert_close(y[:, 1], (x[:, 1] - 0.2) / 0.25)
    with pytest.raises(ValueError, match="need 3"):
        normalize(x, (0.1,), (1.0,))

# ---------------------------------------------------------------- batch iterator


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_iterate_batches_covers_each_sample_once(shuffle, drop_last):
    n, bs = 103, 10
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    y = torch.arange(n)
    g = torch.Generator().manual_seed(0)
    batches = list(iterate_batches(x, y, bs, shuffle=shuffle, generator=g, drop_last=drop_last))
    ys = torch.cat([yb for _, yb in batches])
    assert all(torch.equal(xb[:, 0, 0, 0].long(), yb) for xb, yb in batches)
    if drop_last:
        assert len(batches) == 10 and len(ys) == 100 and len(set(ys.tolist())) == 100
    else:
        assert len(batches) == 11 and torch.equal(ys.sort().values, y)
    assert (ys.tolist() != y[:len(ys)].tolist()) == shuffle


def test_iterate_batches_seeded_and_transformed():
    s = load_dataset("digits")
    aug = get_augmentation("basic", s.img_size, s.in_chans)

    def epoch(seed):
        g = torch.Generator().manual_seed(seed)
        return [xb for xb, _ in iterate_batches(s.train.x, s.train.y, 256, True, g, transform=aug,
                                                device="cpu")]
    a, b, c = epoch(0), epoch(0), epoch(1)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0])
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(s.train.x, s.train.y, 0))
