"""The architecture and dataset registries: one record each, read by build_model, load_dataset
and the trainer (a new record needs no other change)."""
import dataclasses

import pytest
import torch

from ftprop_cuda import data, models, train

from test_train import fast, metrics, run


def test_every_architecture_record_is_honoured():
    for name, record in models.ARCHITECTURES.items():
        assert record.name == name and record.description
        assert models.architecture(name) is record
        with pytest.raises(ValueError, match=f"image_size must be at least "
                                             f"{record.min_image_size} for {name}"):
            models.build_model(name, image_size=record.min_image_size - 1 or 0)
        if record.needs_bn:
            with pytest.raises(ValueError, match="bn=False is not supported"):
                models.build_model(name, bn=False, image_size=max(32, record.min_image_size))
        cfg = train.resolve_config(train.build_parser().parse_args(["--arch", name]))
        assert cfg["bn"] is record.default_bn


def test_a_new_architecture_is_one_record(monkeypatch):
    def tiny(unit, num_classes, in_channels, image_size, bn):
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(
            in_channels * image_size ** 2, 16), unit(), torch.nn.Linear(16, num_classes))
        return net, ["tiny: one hidden layer"]

    record = models.Architecture("tiny", tiny, True, False, 2, "a test network")
    monkeypatch.setitem(models.ARCHITECTURES, "tiny", record)
    cfg = train.resolve_config(train.build_parser().parse_args(["--arch", "tiny"]))
    assert cfg["bn"] is True
    net = models.build_model("tiny", num_classes=3, in_channels=1, image_size=4)
    assert net(torch.randn(2, 1, 4, 4)).shape == (2, 3)


def test_torchvision_names_route_to_their_record():
    record = models.architecture("torchvision:resnet18")
    assert record.name == "torchvision:resnet18" and not record.needs_bn
    args = train.build_parser().parse_args(["--arch", "torchvision:resnet18"])
    assert args.arch == "torchvision:resnet18"
    for bad in ("torchvision:", "vgg16", 3):
        with pytest.raises(ValueError, match="arch must be one of"):
            models.architecture(bad)


def test_dataset_records():
    assert data.DATASETS == tuple(data.REGISTRY)
    for name, info in data.REGISTRY.items():
        assert info.name == name and callable(info.load) and info.description
        assert len(info.mean_std[0]) == len(info.mean_std[1]) == info.in_channels
        assert data.default_root(name) == info.root()
    assert data.default_root("fashion_mnist") == data.FASHION_MNIST_DIR
    assert [n for n, i in data.REGISTRY.items() if i.top5] == ["cifar100", "imagenet"]


def test_trainer_reads_top5_from_the_dataset_record(tmp_path, monkeypatch):
    monkeypatch.setitem(data.REGISTRY, "digits",
                        dataclasses.replace(data.REGISTRY["digits"], top5=True))
    code, _, stderr = run(fast("--dataset", "digits", "--train-limit", "100", "--epochs", "1",
                               "--out", str(tmp_path)))
    assert code == 0, stderr
    (rec,) = metrics(tmp_path)
    assert 0 <= rec["test_top5"] <= 100 and rec["test_top5"] >= rec["test_top1"]
