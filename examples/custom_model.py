"""Drop hard-threshold units into your own model and train it with a plain PyTorch loop.

    python examples/custom_model.py            # scikit-learn's 8x8 digits, 10 epochs
    python examples/custom_model.py --smoke    # a few batches, for the test suite

Step() is a sign unit (+-1) and Staircase(steps=3) a 2-bit quantized ReLU; both are trained
with feasible target propagation (their backward is the FTPROP surrogate named by rule).
"""
import argparse

import torch

import ftprop_cuda
from ftprop_cuda.data import load_dataset


class SmallNet(torch.nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.BatchNorm2d(32),
            ftprop_cuda.Step(rule="soft_hinge"),           # sign: +-1
            torch.nn.Conv2d(32, 64, 3, padding=1, stride=2), torch.nn.BatchNorm2d(64),
            ftprop_cuda.Staircase(steps=3, rule="soft_hinge"),  # 4 levels on [0, 1]
        )
        self.head = torch.nn.Linear(64 * 4 * 4, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def evaluate(model, loader):
    model.eval()
    right = total = 0
    with torch.no_grad():
        for x, y in loader:
            right += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return 100.0 * right / total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    limit = 256 if args.smoke else None
    train_set, test_set, info = load_dataset("digits", train_limit=limit, test_limit=limit)
    train = torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True)
    test = torch.utils.data.DataLoader(test_set, batch_size=256)

    # lean memory mode: the same training bit for bit, far less kept for the backward
    model = ftprop_cuda.lean(SmallNet(info.num_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(1 if args.smoke else args.epochs):
        model.train()
        for x, y in train:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: last batch loss {loss.item():.3f}, "
              f"test top-1 {evaluate(model, test):.1f}%")
        if epoch == 0:
            print("lean memory mode, per layer:\n" + ftprop_cuda.lean_report(model))


if __name__ == "__main__":
    main()
