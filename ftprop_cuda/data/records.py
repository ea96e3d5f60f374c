"""The record of a data set (DatasetInfo), the error of a data set that cannot be loaded, and
the constants that the records and the loaders share. No torch, no numpy.
"""
import dataclasses
import os

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


def check_files(info, root):
    """Raises DataError naming the files of info.files absent from the root (and their source)."""
    folder = os.path.join(root, info.folder) if info.folder else root
    missing = [f for f in info.files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(f"{info.name}: missing {', '.join(missing)} in {folder}; {info.source}")


__all__ = ["DataError", "DatasetInfo", "check_files", "FASHION_MNIST_DIR", "FASHION_MNIST_FILES",
           "SPLIT_SEED", "MNIST_MEAN_STD", "DIGITS_MEAN_STD", "FASHION_MEAN_STD",
           "CIFAR10_MEAN_STD", "CIFAR100_MEAN_STD", "SVHN_MEAN_STD", "IMAGENET_MEAN_STD"]
