"""Specs of assignment 5 (long-range): the adding-problem and copy-task generators, exactly to the written recipe
(compared with ``rnnkit.data``), and a trained gated model beating the mean-predictor baseline on the adding problem.

The model check calls the student's trained model on a fixed test set and judges only its predictions: the test
MSE must be at most half of the MSE of predicting the test targets' mean (about 1/6, the variance of a sum of two
uniforms), a level a memoryless model cannot reach."""
from __future__ import annotations

import numpy as np
import torch

from .. import export
from . import Case, Spec, generator, register

TEST_SAMPLES, TEST_LENGTH, TEST_SEED = 500, 20, 12345
BASELINE_FRACTION = 0.5  # pass: test MSE <= this fraction of the mean predictor's MSE


def _adding_cases() -> list[Case]:
    return [Case("5 samples, length 10, seed=0", (5, 10), {"seed": 0}),
            Case("3 samples, length 2 (the shortest), seed=1", (3, 2), {"seed": 1}),
            Case("4 samples, odd length 7, from a generator", (4, 7), {"generator": generator(3)}),
            Case("2 samples, length 6, dtype float64, seed=4", (2, 6), {"seed": 4, "dtype": torch.float64}),
            Case("1 sample, length 3, seed=5", (1, 3), {"seed": 5})]


def _copy_cases() -> list[Case]:
    return [Case("3 samples, 4 symbols, delay 5, seed=0", (3, 4, 5), {"seed": 0}),
            Case("2 samples, 1 symbol, delay 1 (the shortest), seed=1", (2, 1, 1), {"seed": 1}),
            Case("4 samples, 3 symbols, delay 2, num_symbols=3, from a generator", (4, 3, 2),
                 {"num_symbols": 3, "generator": generator(2)}),
            Case("1 sample, 5 symbols, delay 10, seed=3", (1, 5, 10), {"seed": 3})]


def _adding_reference(*args, **kwargs):
    from rnnkit.data import adding_problem

    return adding_problem(*args, **kwargs)


def _copy_reference(*args, **kwargs):
    from rnnkit.data import copy_task

    return copy_task(*args, **kwargs)


def _test_inputs() -> torch.Tensor:
    """The adding-problem test inputs, built with torch alone (the recipe), so no patched module can change them."""
    g = generator(TEST_SEED)
    values = torch.rand(TEST_SAMPLES, TEST_LENGTH, generator=g)  # (N, T)
    i = torch.randint(0, TEST_LENGTH // 2, (TEST_SAMPLES,), generator=g)
    j = torch.randint(TEST_LENGTH // 2, TEST_LENGTH, (TEST_SAMPLES,), generator=g)
    markers = torch.zeros(TEST_SAMPLES, TEST_LENGTH)
    rows = torch.arange(TEST_SAMPLES)
    markers[rows, i] = 1.0
    markers[rows, j] = 1.0
    return torch.stack([values, markers], dim=-1)  # (N, T, 2)


def _model_cases() -> list[Case]:
    return [Case(f"{TEST_SAMPLES} test sequences of length {TEST_LENGTH}", (_test_inputs(),))]


def _targets_reference(x):
    from rnnkit.data import adding_problem

    x_ref, y = adding_problem(TEST_SAMPLES, TEST_LENGTH, seed=TEST_SEED)
    if not torch.equal(x_ref, x):
        raise RuntimeError("the spec's adding-problem recipe no longer matches rnnkit.data.adding_problem")
    return y


def _judge_model(got: dict, want: dict, case: int) -> str | None:
    if export.text(got, "structure") != "T":
        return "the model should return one tensor of predictions, shape (N,)"
    shape = tuple(np.asarray(got.get("l0.shape", [])).tolist())
    if shape not in ((TEST_SAMPLES,), (TEST_SAMPLES, 1)):
        return f"the model's predictions have shape {shape}, expected ({TEST_SAMPLES},) for x of shape " \
               f"({TEST_SAMPLES}, {TEST_LENGTH}, 2)"
    if "l0.value" not in got:
        return "the predictions could not be read"
    pred = np.asarray(got["l0.value"], dtype=np.float64).reshape(-1)
    if not np.isfinite(pred).all():
        return "the predictions contain NaN or inf"
    y = np.asarray(want["l0.value"], dtype=np.float64)
    mse, baseline = float(np.mean((pred - y) ** 2)), float(np.mean((y - y.mean()) ** 2))
    if mse > BASELINE_FRACTION * baseline:
        return f"test MSE {mse:.4f} does not beat the mean predictor enough: it must be at most " \
               f"{BASELINE_FRACTION:g} x {baseline:.4f} = {BASELINE_FRACTION * baseline:.4f}"
    return None


register(Spec("adding_problem", _adding_cases, _adding_reference, leaf_names=("x", "y"),
              tolerances={"torch.float32": (0.0, 1e-6), "torch.float64": (0.0, 1e-12)},
              summary="the adding-problem generator, draw for draw like rnnkit.data.adding_problem"))
register(Spec("copy_task", _copy_cases, _copy_reference, leaf_names=("x", "y"),
              summary="the copy-task generator, exactly like rnnkit.data.copy_task"))
register(Spec("adding_gated_beats_baseline", _model_cases, _targets_reference, grad_enabled=False, judge=_judge_model,
              summary="a trained gated model's test MSE on the adding problem is at most half the mean predictor's"))
