"""Shared pytest set-up: tests marked ``cuda`` skip cleanly without a GPU, and ``repo_root`` is the checkout.

No default dtype is set here: each equality test builds its tensors in float64 itself (``dtype=torch.float64``)."""
import os

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device (none present)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


@pytest.fixture
def repo_root():
    return REPO_ROOT
