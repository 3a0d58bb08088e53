"""rnnkit.train_config: every TrainConfig field is checked when the config is made, and device strings resolve to a
device this machine has (a bad value fails before data is loaded or a model is moved)."""

import math

import pytest
import torch

from rnnkit import train_config
from rnnkit.train_config import TrainConfig


@pytest.mark.parametrize("kwargs, match", [
    ({"optimizer": "sgd"}, "optimizer 'rmsprop' or 'adam'"),
    ({"lr": 0.0}, "lr > 0"),
    ({"clip_norm": -1.0}, "clip_norm > 0 or None"),
    ({"weight_noise_std": -0.1}, "weight_noise_std >= 0"),
    ({"patience": 0}, "patience >= 1 or None"),
    ({"lr": math.inf}, "a finite lr"),  # diverged to NaN only after the first update
    ({"weight_noise_std": math.nan}, "a finite weight_noise_std"),  # NaN > 0 is False: noise silently off
    ({"seed": 2**64}, r"seed in -2\*\*63"),  # was 'Overflow when unpacking long long'
    ({"resume": True}, "resume=True needs checkpoint="),  # was silently a fresh start
    ({"rmsprop_alpha": 1.5}, r"0 <= rmsprop_alpha < 1"),  # torch accepts it; the sqrt then goes NaN
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 2.5}, r"expected epochs to be an int, got float \(2.5\)"),  # would silently run 3 epochs
    ({"batch_size": "16"}, r"expected batch_size to be an int, got str"),
    ({"patience": 1.5}, r"expected patience to be an int or None, got float"),
    ({"seed": None}, r"expected seed to be an int, got NoneType"),
    ({"lr": "1e-3"}, r"expected lr to be a number, got str"),
    ({"clip_norm": True}, r"expected clip_norm to be a number or None, got bool"),
    ({"device": None}, r"expected device to be a string"),
])
def test_config_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        TrainConfig(**kwargs)


def test_every_config_field_has_a_comment():
    import dataclasses
    import inspect

    source = inspect.getsource(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        line = next(l for l in source.splitlines() if l.strip().startswith(f"{f.name}:"))
        assert "#" in line, f"TrainConfig.{f.name} has no comment"


def test_device_checks(monkeypatch):
    with pytest.raises(ValueError, match="got 'meta'"):  # parses as a torch device, but no model trains there
        train_config.resolve_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"'cuda:3' requested but this machine has 1 CUDA device\(s\)"):
        train_config.resolve_device("cuda:3")  # was 'invalid device ordinal' from inside model.to()
    assert train_config.resolve_device("cuda:0") == torch.device("cuda:0")
