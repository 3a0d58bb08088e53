r"""Long-range synthetic tasks at growing lengths: where a tanh-RNN stops learning and gated units keep going.

For each task, length and cell type (tanh / GRU / LSTM with about the same number of recurrent parameters) a
small model is trained with :class:`rnnkit.train.Trainer` on freshly generated data and scored on held-out samples:

* ``adding`` (Hochreiter & Schmidhuber 1997): regress the sum of the two marked values after ``T`` steps; score =
  test MSE, against 1/6 for always predicting the mean. The two marks are up to ``T - 1`` steps apart.
* ``copy``: read 5 symbols, wait ``delay`` blanks, then reproduce them; score = accuracy on the 5 recalled symbols
  (chance 1/8). The distance to remember grows with ``delay``.
* ``parity``: is the number of ones among ``T`` bits odd? score = accuracy (chance 1/2).

Chapter 5 loads ``book/results/chung2014/tasks.json`` (made by ``python -m rnnkit tasks``) and plots score against
length. Data recipes are :mod:`rnnkit.data.tasks`; seeds make every number reproducible.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.tasks import adding_problem, copy_task, parity_task
from ..models import count_parameters, largest_fit, make_recurrent, recurrent_parameter_count
from ..train import Trainer
from ..train_config import TrainConfig, resolve_device
from .runs import environment, make_out_folder, torch_threads

__all__ = ["TasksConfig", "QUICK", "TaskModel", "run", "validate_tasks_results"]

COPY_SYMBOLS, COPY_LENGTH = 8, 5  # alphabet size and number of symbols to copy


@dataclass
class TasksConfig:
    tasks: tuple[str, ...] = ("adding", "copy", "parity")  # which tasks to run
    cells: tuple[str, ...] = ("tanh", "gru", "lstm")  # cell types, each at about `budget` recurrent parameters
    adding_lengths: tuple[int, ...] = (10, 25, 50, 100)  # sequence lengths T of the adding problem
    copy_delays: tuple[int, ...] = (5, 10, 20, 40)  # blanks between reading and recalling 5 symbols
    parity_lengths: tuple[int, ...] = (2, 4, 6, 8)  # number of bits
    budget: int = 3000  # recurrent-layer parameters per model (hidden size chosen per cell to fit)
    train_size: int = 4000  # training samples (one pass = one epoch)
    test_size: int = 1000  # held-out samples for the score
    epochs: int = 15  # passes over the training samples
    batch_size: int = 50  # samples per update
    lr: float = 1e-2  # Adam learning rate
    lstm_forget_bias: float | None = 1.0  # LSTM forget-gate bias at start (Gers et al. 2000); None: torch's init
    clip_norm: float = 1.0  # global gradient-norm clipping
    seed: int = 0  # data, initialisation and data order
    backend: str = "torch"  # rnnkit layer backend (all give the same numbers; "torch" is fastest on CPU)
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    threads: int | None = 1  # torch CPU threads while running (1: fastest for models this small; None: as is)
    progress: bool = False  # tqdm progress bars per run
    command: str | None = field(default=None, repr=False)  # the command line that ran this (recorded in results)


QUICK = dict(adding_lengths=(5, 10), copy_delays=(2,), parity_lengths=(4,), train_size=200, test_size=100, epochs=1)


def _hidden_for_budget(cell: str, n_in: int, budget: int) -> int:
    # hidden=1 must not silently exceed the promised budget: largest_fit raises then
    return largest_fit(lambda hidden: recurrent_parameter_count(cell, n_in, hidden), budget,
                       f"tasks: a {cell} layer on {n_in} inputs")


class TaskModel(nn.Module):
    """Recurrent layer + linear readout, batch-first at the edge: features ``(B, T, F)`` or tokens ``(B, T)``
    (with ``vocab_size``) -> ``(B, n_out)`` from the last step, or ``(B, T, n_out)`` with ``per_step=True``."""

    def __init__(self, cell: str, n_in: int, hidden: int, n_out: int, *, vocab_size: int | None = None,
                 per_step: bool = False, **layer_kwargs):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, n_in) if vocab_size is not None else None
        self.rnn = make_recurrent(cell, n_in, hidden, batch_first=True, **layer_kwargs)
        self.out = nn.Linear(hidden, n_out)
        self.per_step = per_step

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, F)`` features or ``(B, T)`` tokens -> ``(B, n_out)``, or ``(B, T, n_out)`` with ``per_step``."""
        if self.embed is not None:
            x = self.embed(x)  # (B, T, E)
        h, _ = self.rnn(x)  # (B, T, H)
        return self.out(h if self.per_step else h[:, -1])  # (B, T, n_out) or (B, n_out)


def _task(name: str, length: int, config: TasksConfig, cell: str, g: torch.Generator):
    """(train data, test data, model, loss_fn, score_fn, chance score) for one task at one length."""
    n = config.train_size + config.test_size
    kw: dict[str, Any] = {"backend": config.backend}
    if name == "adding":
        x, y = adding_problem(n, length, generator=g)
        model = TaskModel(cell, 2, _hidden_for_budget(cell, 2, config.budget), 1, **kw)
        loss = lambda m, b: F.mse_loss(m(b[0]).squeeze(-1), b[1])  # noqa: E731
        score = lambda pred, y: float(F.mse_loss(pred.squeeze(-1), y))  # noqa: E731
        chance = float(y[config.train_size:].var(unbiased=False))  # MSE of predicting the test mean
    elif name == "copy":
        x, y = copy_task(n, COPY_LENGTH, length, num_symbols=COPY_SYMBOLS, generator=g)
        emb = 8
        model = TaskModel(cell, emb, _hidden_for_budget(cell, emb, config.budget), COPY_SYMBOLS + 1,
                          vocab_size=COPY_SYMBOLS + 2, per_step=True, **kw)
        # loss and accuracy on the last COPY_LENGTH steps, where the symbols must be recalled (the blanks before
        # them are trivially predictable and would otherwise dominate the mean)
        def loss(m, b):
            return F.cross_entropy(m(b[0])[:, -COPY_LENGTH:].flatten(0, 1), b[1][:, -COPY_LENGTH:].flatten())

        def score(pred, y):
            return float((pred[:, -COPY_LENGTH:].argmax(-1) == y[:, -COPY_LENGTH:]).float().mean())

        chance = 1.0 / COPY_SYMBOLS
    elif name == "parity":
        x, y = parity_task(n, length, generator=g)
        model = TaskModel(cell, 1, _hidden_for_budget(cell, 1, config.budget), 2, **kw)
        loss = lambda m, b: F.cross_entropy(m(b[0]), b[1])  # noqa: E731
        score = lambda pred, y: float((pred.argmax(-1) == y).float().mean())  # noqa: E731
        chance = 0.5
    else:
        raise ValueError(f"tasks: expected tasks among 'adding', 'copy', 'parity', got {name!r}")
    if cell == "lstm" and config.lstm_forget_bias is not None:
        rnn: Any = model.rnn
        h = rnn.hidden_size
        with torch.no_grad():  # gate rows i, f, g, o: the forget gate starts mostly open, so memory survives
            rnn.bias_ih_l0[h : 2 * h] = config.lstm_forget_bias
            rnn.bias_hh_l0[h : 2 * h] = 0.0
    k = config.train_size
    return (x[:k], y[:k]), (x[k:], y[k:]), model, loss, score, chance


def _lengths(config: TasksConfig, name: str) -> tuple[int, ...]:
    return {"adding": config.adding_lengths, "copy": config.copy_delays, "parity": config.parity_lengths}.get(name, ())


def run(config: TasksConfig, out: str | None = None, *, verbose: bool = True) -> dict:
    """Train every (task, length, cell) combination; write ``tasks.json`` into ``out`` (if given)."""
    # Everything that can be wrong with the config fails here, not after the earlier tasks have trained.
    for name in config.tasks:
        if name not in ("adding", "copy", "parity"):
            raise ValueError(f"tasks: expected tasks among 'adding', 'copy', 'parity', got {name!r}")
    for what, names in (("tasks", config.tasks), ("cells", config.cells)):
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: expected each of {what} once, got {list(names)}")
    if any(length < 2 for length in config.adding_lengths if "adding" in config.tasks):
        raise ValueError(f"tasks: expected adding_lengths >= 2 (one marker in each half), got {config.adding_lengths}")
    resolve_device(config.device)
    make_out_folder(out, "tasks")
    with torch_threads(config.threads):
        return _run(config, out, verbose)


def _run(config, out, verbose: bool) -> dict:
    start = time.perf_counter()
    results: dict[str, Any] = {
        "experiment": "tasks", "format_version": 1, "command": config.command or "python -m rnnkit tasks",
        "config": dataclasses.asdict(config), "environment": environment(), "tasks": {}}
    for name in config.tasks:
        rows = []
        for length in _lengths(config, name):
            for cell in config.cells:
                g = torch.Generator().manual_seed(config.seed)  # the same data for every cell type
                torch.manual_seed(config.seed)  # initial weights
                train, test, model_, loss_fn, score_fn, chance = _task(name, length, config, cell, g)
                trainer = Trainer(model_, TrainConfig(
                    optimizer="adam", lr=config.lr, epochs=config.epochs, batch_size=config.batch_size,
                    clip_norm=config.clip_norm, seed=config.seed, device=config.device, progress=config.progress),
                    loss_fn=loss_fn)
                history = trainer.fit(train)
                with torch.no_grad():
                    model_.eval()
                    pred = model_(test[0].to(trainer.device)).cpu()
                row = {"length": length, "cell": cell, "hidden": model_.rnn.hidden_size,
                       "parameters": count_parameters(model_), "score": score_fn(pred, test[1]), "chance": chance,
                       "train_loss": history["train_loss"], "seconds": history["seconds"][-1],
                       "cpu_seconds": history["cpu_seconds"][-1],
                       "updates": history["updates"][-1]}
                rows.append(row)
                if verbose:
                    print(f"{name} length {length} {cell}: score {row['score']:.4f} (chance {chance:.4f}, "
                          f"{row['seconds']:.1f} s)", file=sys.stderr, flush=True)
        metric = "test MSE (lower is better)" if name == "adding" else "test accuracy (higher is better)"
        results["tasks"][name] = {"metric": metric, "rows": rows}
    results["seconds_total"] = time.perf_counter() - start
    validate_tasks_results(results)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "tasks.json"), "w") as f:
            json.dump(results, f, indent=1)
    return results


def validate_tasks_results(results: dict) -> None:
    """Raise ``ValueError`` naming what is missing or malformed in a ``tasks.json``."""
    problems = []
    for key in ("experiment", "command", "config", "tasks", "seconds_total"):
        if key not in results:
            problems.append(f"missing top-level key {key!r}")
    for name, task in results.get("tasks", {}).items():
        if not task.get("rows"):
            problems.append(f"tasks[{name!r}] has no rows")
        for i, row in enumerate(task.get("rows", [])):
            for key in ("length", "cell", "hidden", "parameters", "score", "chance", "train_loss", "seconds"):
                if key not in row:
                    problems.append(f"tasks[{name!r}]['rows'][{i}] is missing {key!r}")
    if problems:
        raise ValueError("tasks.json: " + "; ".join(problems))
