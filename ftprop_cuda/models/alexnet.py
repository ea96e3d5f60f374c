"""AlexNet as DoReFa-Net trains it on ImageNet (BN after every layer but the first and last).

Structure from the paper's released code (models/alexnet_dorefa.py), itself a port of
tensorpack's examples/DoReFa-Net/alexnet-dorefa.py. Every hidden activation is the unit.
"""
from collections import OrderedDict

import torch.nn as nn


class AlexNet(nn.Module):
    def __init__(self, unit, num_classes=1000, in_channels=3, image_size=224, bn=True):
        super().__init__()
        s = (image_size - 12) // 4 + 1       # conv0 12x12 stride 4, valid
        s = (s + 2 - 3) // 2 + 1             # pool1 3/2, padded
        s = (s - 3) // 2 + 1                 # pool2 3/2
        s = (s - 3) // 2 + 1                 # pool4 3/2
        if s < 1:
            raise ValueError(f"image_size must be at least 67 for alexnet; got {image_size}")
        bias = not bn

        def bn2d(c):
            return [(f"bn{c[0]}", nn.BatchNorm2d(c[1], eps=1e-4))] if bn else []

        def bn1d(c):
            return [(f"bn{c[0]}", nn.BatchNorm1d(c[1], eps=1e-4))] if bn else []

        layers = [
            ("conv0", nn.Conv2d(in_channels, 96, 12, stride=4, bias=bias)),
            ("act0", unit()),
            ("conv1", nn.Conv2d(96, 256, 5, padding=2, bias=bias)), *bn2d((1, 256)),
            ("pool1", nn.MaxPool2d(3, 2, padding=1)), ("act1", unit()),
            ("conv2", nn.Conv2d(256, 384, 3, padding=1, bias=bias)), *bn2d((2, 384)),
            ("pool2", nn.MaxPool2d(3, 2)), ("act2", unit()),
            ("conv3", nn.Conv2d(384, 384, 3, padding=1, bias=bias)), *bn2d((3, 384)),
            ("act3", unit()),
            ("conv4", nn.Conv2d(384, 256, 3, padding=1, bias=bias)), *bn2d((4, 256)),
            ("pool4", nn.MaxPool2d(3, 2)), ("act4", unit()),
            ("flatten", nn.Flatten()),
            ("fc0", nn.Linear(256 * s * s, 4096, bias=bias)), *bn1d(("_fc0", 4096)),
            ("act5", unit()),
            ("fc1", nn.Linear(4096, 4096, bias=bias)), *bn1d(("_fc1", 4096)),
            ("act6", unit()),
            ("fc2", nn.Linear(4096, num_classes)),
        ]
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x):
        return self.layers(x)
