"""The 4-layer and 8-layer convnets of the paper's CIFAR-10 experiments.

Layer orders and sizes follow the authors' released code (github.com/afriesen/ftprop,
models/convnet4.py and models/convnet8.py); the 8-layer net is DoReFa-Net's SVHN model.
"""
from collections import OrderedDict

import torch.nn as nn


def _conv_out(size, kernel, padding=0, stride=1):
    return (size + 2 * padding - kernel) // stride + 1


class ConvNet4(nn.Module):
    """conv5x5(32, pad 3) > pool > act > conv5x5(64, pad 2) > pool > act > [BN] > fc1024 > act > [BN] > fc."""

    def __init__(self, unit, num_classes=10, in_channels=3, image_size=32, bn=True):
        super().__init__()
        s = _conv_out(image_size, 5, 3) // 2
        s = _conv_out(s, 5, 2) // 2
        if s < 1:
            raise ValueError(f"image_size must be at least 4 for convnet4; got {image_size}")
        layers = [
            ("conv1", nn.Conv2d(in_channels, 32, 5, padding=3)),
            ("pool1", nn.MaxPool2d(2)),
            ("act1", unit()),
            ("conv2", nn.Conv2d(32, 64, 5, padding=2)),
            ("pool2", nn.MaxPool2d(2)),
            ("act2", unit()),
        ]
        if bn:
            layers.append(("bn2", nn.BatchNorm2d(64)))
        layers += [("flatten", nn.Flatten()), ("fc1", nn.Linear(64 * s * s, 1024)), ("act3", unit())]
        if bn:
            layers.append(("bn3", nn.BatchNorm1d(1024)))
        layers.append(("fc2", nn.Linear(1024, num_classes)))
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x):
        return self.layers(x)


class ConvNet8(nn.Module):
    """DoReFa-Net's SVHN convnet: 7 conv layers and one fc, BN (eps 1e-4) after conv 2-7."""

    def __init__(self, unit, num_classes=10, in_channels=3, image_size=32, bn=True):
        super().__init__()
        # The released code supports 40x40 (SVHN resized, valid first conv, 5x5 last conv) and
        # 32x32 (CIFAR, first conv padded by 2, 4x4 last conv); other sizes pad like 32x32 and
        # size the last conv to cover what is left, so it always ends at 1x1.
        pad0 = 0 if image_size == 40 else 2
        s = _conv_out(image_size, 5, pad0) // 2      # conv0, pool
        s = s // 2                                   # conv1, conv2 ('same'), pool
        s = _conv_out(_conv_out(s, 3), 3)            # conv3, conv5 ('valid'); conv4 'same'
        if s < 1:
            raise ValueError(f"image_size must be at least 20 for convnet8; got {image_size}")
        bias = not bn

        def conv_bn(name, cin, cout, k, pad):
            out = [(f"conv{name}", nn.Conv2d(cin, cout, k, padding=pad, bias=bias))]
            if bn:
                out.append((f"bn{name}", nn.BatchNorm2d(cout, eps=1e-4)))
            return out

        layers = [
            ("conv0", nn.Conv2d(in_channels, 48, 5, padding=pad0)),
            ("pool0", nn.MaxPool2d(2)),
            ("act0", unit()),
            *conv_bn(1, 48, 64, 3, 1), ("act1", unit()),
            *conv_bn(2, 64, 64, 3, 1), ("pool2", nn.MaxPool2d(2)), ("act2", unit()),
            *conv_bn(3, 64, 128, 3, 0), ("act3", unit()),
            *conv_bn(4, 128, 128, 3, 1), ("act4", unit()),
            *conv_bn(5, 128, 128, 3, 0), ("act5", unit()),
            ("dropout", nn.Dropout2d()),
            *conv_bn(6, 128, 512, s, 0), ("act6", unit()),
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(512, num_classes)),
        ]
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x):
        return self.layers(x)
