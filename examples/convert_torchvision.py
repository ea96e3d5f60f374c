"""Convert a torchvision model's ReLUs to hard-threshold units and take a few training steps.

    python examples/convert_torchvision.py --model resnet18 --nonlin qrelu
    python examples/convert_torchvision.py --smoke     # tiny input, for the test suite

No weights are downloaded (weights=None). For the trainer, the same conversion is
`ftprop-train --arch torchvision:resnet18`.
"""
import argparse

import torch
import torchvision

import ftprop_cuda


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="a torchvision classification model")
    parser.add_argument("--nonlin", default="step", choices=("step", "step01", "qrelu", "qrelu5"))
    parser.add_argument("--rule", default="soft_hinge")
    parser.add_argument("--smoke", action="store_true", help="tiny input, for the test suite")
    args = parser.parse_args()
    torch.manual_seed(0)

    model = torchvision.models.get_model(args.model, weights=None, num_classes=10)
    model, report = ftprop_cuda.convert(model, nonlin=args.nonlin, rule=args.rule)
    print(report)

    size, batch, steps = (32, 4, 2) if args.smoke else (224, 16, 5)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for i in range(steps):  # random data: this shows the mechanics, not learning
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"step {i + 1}: loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
