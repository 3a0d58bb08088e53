"""What a training run is configured with: :class:`TrainConfig` (one dataclass, every field checked when it is made)
and the device string it names. :mod:`rnnkit.train` runs the loop; this module only says what is a valid request, so a
bad value fails before any data is loaded or any model is moved.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from . import _checks

__all__ = ["TrainConfig", "resolve_device"]


@dataclass
class TrainConfig:
    optimizer: str = "rmsprop"  # "rmsprop" or "adam"
    lr: float = 1e-3  # learning rate of the optimizer
    epochs: int = 10  # maximum number of passes over the training set
    batch_size: int = 16  # examples per update; the last batch of an epoch may be smaller
    clip_norm: float | None = 1.0  # rescale the gradient to this global L2 norm when above it (None: off)
    clip_value: float | None = None  # clamp each gradient entry into [-clip_value, clip_value] (None: off)
    weight_noise_std: float = 0.0  # std of Gaussian noise added to every parameter for each forward/backward (0: off)
    patience: int | None = None  # stop after this many epochs without a better validation loss (None: never)
    restore_best: bool = True  # with a validation set, end with the weights of the best validation epoch
    seed: int = 0  # seeds data order, weight noise and the global torch RNG (dropout) at the start of fit()
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ... or "auto" (CUDA when available)
    checkpoint: str | None = None  # path of the checkpoint written after every epoch (None: no checkpoints)
    resume: bool = False  # if the checkpoint file exists, continue from it instead of starting fresh
    rmsprop_alpha: float = 0.9  # RMSProp decay of the squared-gradient average
    eps: float = 1e-6  # optimizer epsilon (RMSProp and Adam)
    time_limit: float | None = None  # stop after the epoch that passes this many wall-clock seconds (None: no limit)
    log_every: int = 10  # refresh the progress bar's loss / norm every this many steps
    progress: bool = True  # show a tqdm progress bar (one bar per fit, one tick per epoch)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "log_every", "seed", "patience"):
            check = _checks.optional_int if name == "patience" else _checks.integer
            setattr(self, name, check("TrainConfig", name, getattr(self, name)))  # NumPy ints become ints
        for name in ("lr", "weight_noise_std", "rmsprop_alpha", "eps", "clip_norm", "clip_value", "time_limit"):
            value = getattr(self, name)
            optional = name in ("clip_norm", "clip_value", "time_limit")
            if not (optional and value is None) and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise TypeError(f"TrainConfig: expected {name} to be a number{' or None' if optional else ''}, "
                                f"got {type(value).__name__} ({value!r})")
        for name in ("lr", "weight_noise_std", "rmsprop_alpha", "eps"):  # NaN slips past every < and > below
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"TrainConfig: expected a finite {name}, got {getattr(self, name)!r}")
        if not -(2**63) <= self.seed <= 2**63 - 2:  # torch seeds are 64-bit; the weight-noise stream uses seed + 1
            raise ValueError(f"TrainConfig: expected seed in -2**63 .. 2**63 - 2 (64-bit), got {self.seed}")
        self.device = str(self.device) if isinstance(self.device, torch.device) else self.device  # JSON-friendly
        if not isinstance(self.device, str):
            raise TypeError(f"TrainConfig: expected device to be a string such as 'cpu', 'cuda', 'cuda:1' or 'auto', "
                            f"got {type(self.device).__name__}")
        if self.resume and not self.checkpoint:
            raise ValueError("TrainConfig: resume=True needs checkpoint= (the file to resume from), got none")
        if self.optimizer not in ("rmsprop", "adam"):
            raise ValueError(f"TrainConfig: expected optimizer 'rmsprop' or 'adam', got {self.optimizer!r}")
        for name in ("lr", "epochs", "batch_size", "log_every"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig: expected {name} > 0, got {getattr(self, name)!r}")
        for name in ("clip_norm", "clip_value", "time_limit"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"TrainConfig: expected {name} > 0 or None, got {value!r}")
        if not 0 <= self.rmsprop_alpha < 1:  # torch accepts 1.5, then the squared-gradient average turns negative
            raise ValueError(f"TrainConfig: expected 0 <= rmsprop_alpha < 1, got {self.rmsprop_alpha!r}")
        if self.weight_noise_std < 0:
            raise ValueError(f"TrainConfig: expected weight_noise_std >= 0, got {self.weight_noise_std!r}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"TrainConfig: expected patience >= 1 or None, got {self.patience!r}")


def resolve_device(device: str) -> torch.device:
    """The ``torch.device`` a config's ``device`` string names (``"auto"``: CUDA when available), checked now."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"Trainer: expected device 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Trainer: device {device!r} requested but CUDA is not available (use 'cpu' or 'auto')")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        # would fail later inside model.to() with "invalid device ordinal"
        raise ValueError(f"Trainer: device {device!r} requested but this machine has {torch.cuda.device_count()} "
                         f"CUDA device(s): cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"Trainer: expected device 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', got {device!r}")
    return dev
