"""What every experiment run shares: the results folder made before training, the thread count for the run, and
the environment recorded beside the results (:mod:`rnnkit.experiments.chung2014`, :mod:`rnnkit.experiments.tasks`)."""

from __future__ import annotations

import contextlib
import os
import platform

import torch

__all__ = ["torch_threads", "make_out_folder", "environment"]


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``torch.set_num_threads(threads)`` (``None``: unchanged), then restore the old count."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def make_out_folder(out: str | None, who: str) -> None:
    """Create the results folder ``out`` (if given) now, not after minutes of training: a file in the way or a
    read-only place fails before anything is trained."""
    if out is None:
        return
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{who}: the output folder {out} exists and is not a folder")
    os.makedirs(out, exist_ok=True)


def environment() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "threads": torch.get_num_threads()}
