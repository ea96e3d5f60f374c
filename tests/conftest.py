"""Shared test harness: torchvision-style device parametrisation and comparison helpers."""
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


def cpu_and_cuda():
    """Device parameter list; the CUDA entry carries the needs_cuda mark (skipped without GPU)."""
    return ("cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda))
