"""The data sets read through torchvision from files on disk: MNIST, CIFAR-10/100, SVHN and
ImageNet (an ImageFolder), with the paper's augmentation.
"""
import os

from .records import DataError, check_files


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
            check_files(info, root)
        base = [T.ToTensor(), T.Normalize(*info.mean_std)]
        try:
            return make(datasets, T, root, base, download)
        except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
            raise DataError(f"{info.name}: cannot load from {root}: {exc}")
    return load


# The registry's loaders: load(info, root, download) -> (train_set, test_set)
load_mnist = _torchvision_loader(_mnist)
load_cifar10 = _torchvision_loader(lambda *a: _cifar("CIFAR10", *a))
load_cifar100 = _torchvision_loader(lambda *a: _cifar("CIFAR100", *a))
load_svhn = _torchvision_loader(_svhn)


def load_imagenet(info, root, download):
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


__all__ = ["load_mnist", "load_cifar10", "load_cifar100", "load_svhn", "load_imagenet"]
