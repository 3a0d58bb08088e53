r"""Reproduce Chung, Gulcehre, Cho & Bengio (2014), "Empirical evaluation of gated recurrent neural networks on
sequence modeling", Section 4-5 on polyphonic music: tanh-RNN vs GRU vs LSTM of about the same size.

Protocol (the paper's, scaled to a laptop): one recurrent layer with 88 sigmoid outputs
(:class:`~rnnkit.models.PianoRollModel`), RMSProp, weight noise :math:`\sigma = 0.075`, gradient norm rescaled to 1
when above 1, the learning rate chosen by validation NLL, early stopping on validation. Reported NLLs are nats per
frame (summed over the 88 keys), evaluated without weight noise.

Repeats: the whole protocol (search and training) runs once per seed ``seed, seed + 1, ...`` (``seeds`` of them); a
seed fixes the initial weights, the data order, the weight noise. Each model's numbers are summarised as mean and
sample standard deviation over seeds (:mod:`rnnkit.experiments.stats`), and one model is called better than another
only when the difference of means exceeds the sum of the two standard deviations (:func:`verdicts`).

Learning-rate search, per seed: ``lr_search`` rates on a geometric grid spanning ``lr_range`` train
``search_epochs`` epochs each from the same initial weights (a paired comparison); if the best is the smallest or
the largest rate tried, the grid grows by one step beyond that end (up to ``lr_extend`` steps each way) and the new
rate is tried, so the chosen rate has a worse neighbour on both sides. A diverged rate counts as worse. If the best
is still at an end when the extensions run out, the result records a warning (``results["warnings"]``) that the
book prints. The best rate's run then continues to convergence with early stopping.

The (model, seed) runs are independent and run in ``workers`` processes (``threads`` torch threads each); the numbers
do not depend on ``workers``.

Data: music21's Bach chorales (:func:`rnnkit.data.chorales.load_chorales`) by default — the same composer and
quarter-note frames as the JSB Chorales benchmark, but a different selection and split, so compare trends, not
decimals — or any Boulanger-Lewandowski file (``data_file``) for the exact benchmark.

Outputs in ``out``: ``results.json`` (format checked by :func:`validate_results`), ``learning_curves.png``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from ..models import PianoRollModel, count_parameters, units_for_budget
from ..train import Trainer
from ..train_config import TrainConfig, resolve_device
from .chung2014_report import (
    _HISTORY_KEYS,
    FORMAT_VERSION,
    NAMES,
    format_table,
    plot_learning_curves,
    plot_lr_search,
    validate_results,
    verdicts,
)
from .runs import environment, make_out_folder, torch_threads
from .stats import summarize

__all__ = ["Chung2014Config", "QUICK", "PAPER_TABLE2", "PAPER_UNITS", "run", "validate_results", "format_table",
           "plot_learning_curves", "plot_lr_search", "lr_candidates", "verdicts"]

# Table 1 of the paper: units per cell type for the music datasets, and the parameter counts it reports.
PAPER_UNITS = {"tanh": 100, "gru": 46, "lstm": 36}
PAPER_PARAMETERS = {"tanh": 20_100, "gru": 20_200, "lstm": 19_800}
# Table 2: average negative log-probability per time step, (train, test).
PAPER_TABLE2 = {
    "Nottingham": {"tanh": (3.22, 3.13), "gru": (2.79, 3.23), "lstm": (3.08, 3.20)},
    "JSB Chorales": {"tanh": (8.82, 9.10), "gru": (6.94, 8.54), "lstm": (8.15, 8.67)},
    "MuseData": {"tanh": (5.64, 6.23), "gru": (5.06, 5.99), "lstm": (5.18, 6.23)},
    "Piano-midi": {"tanh": (5.64, 9.03), "gru": (4.93, 8.82), "lstm": (6.49, 9.03)},
}


@dataclass
class Chung2014Config:
    models: tuple[str, ...] = ("tanh", "gru", "lstm")  # cell types to train, in this order
    data_file: str | None = None  # Boulanger-Lewandowski pickle/JSON; None: music21's Bach chorales
    frames: str = "quarter"  # chorale frame length ("quarter", "eighth", "sixteenth"); ignored with data_file
    split_seed: int = 0  # chorale train/valid/test split; ignored with data_file
    paper_dataset: str | None = None  # row of Table 2 to print beside ours (None: guessed from the data)
    budget: int | None = None  # None: the paper's units (100/46/36); else the most units within this many parameters
    seeds: int = 3  # repeats of the whole protocol per model, with seeds seed, seed + 1, ...
    epochs: int = 200  # maximum epochs of the selected run (search epochs included)
    patience: int = 15  # early stopping: epochs without a better validation NLL
    lr_search: int = 6  # K learning rates on a geometric grid spanning lr_range (ends included)
    lr_range: tuple[float, float] = (2e-3, 6.4e-2)  # ends of the initial grid (6 rates: a factor 2 apart)
    lr_extend: int = 3  # grid steps that may be added beyond each end when the best rate is an end
    search_epochs: int = 15  # epochs every candidate trains before the best (on validation) continues
    batch_size: int = 16  # sequences per update
    optimizer: str = "rmsprop"  # "rmsprop" (the paper) or "adam"
    weight_noise_std: float = 0.075  # Graves-style weight noise, as in the paper
    clip_norm: float = 1.0  # rescale the gradient when its norm exceeds this (the paper: 1)
    seed: int = 0  # first seed: model initialisation, data order and weight noise
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    threads: int | None = 1  # torch CPU threads per worker (1: fastest for models this small; None: as is)
    workers: int = 2  # processes running (model, seed) runs side by side (1: in this process)
    backend: str = "fused"  # rnnkit layer backend: "fused" (fastest here), "reference" or "torch"
    gru_reset_after: bool = False  # False: Cho et al.'s GRU, as in the paper (needs backend reference/fused)
    max_sequences: int | None = None  # keep only the first N sequences of each split (quick runs)
    time_limit: float | None = None  # wall-clock seconds per (model, seed) run, search included (None: no limit);
    # off by default: a limit makes the numbers depend on how busy the machine is
    progress: bool = True  # tqdm progress bars (only with workers=1)
    command: str | None = field(default=None, repr=False)  # the command line that ran this (recorded in results)


# --quick: a smoke run in seconds (tests); numbers from it mean nothing.
QUICK = dict(epochs=3, search_epochs=1, lr_search=3, lr_extend=1, seeds=2, max_sequences=12, patience=2,
             time_limit=30.0, workers=1)


def lr_candidates(config: Chung2014Config) -> list[float]:
    """The initial grid: ``lr_search`` rates spaced geometrically from ``lr_range[0]`` to ``lr_range[1]``."""
    lo, hi = config.lr_range
    if not 0 < lo <= hi:
        raise ValueError(f"chung2014: expected 0 < lr_range[0] <= lr_range[1], got {config.lr_range}")
    k = config.lr_search
    return [lo] if k == 1 else [_round(lo * (hi / lo) ** (j / (k - 1))) for j in range(k)]


def _round(lr: float) -> float:
    """Four significant digits: 0.016, not 0.015999999999999997, in the results and the printouts."""
    return float(f"{lr:.4g}")


def lr_step(config: Chung2014Config) -> float:
    """The factor between neighbouring rates, also used to extend the grid (2 when the grid has one rate)."""
    lo, hi = config.lr_range
    return 2.0 if config.lr_search == 1 or hi == lo else (hi / lo) ** (1 / (config.lr_search - 1))


def _load(config: Chung2014Config) -> tuple[dict, dict]:
    from .. import data

    if config.data_file is not None:
        splits = data.load_bl_file(config.data_file)
        base = os.path.basename(config.data_file).lower()
        guess = next((name for key, name in (("nott", "Nottingham"), ("jsb", "JSB Chorales"), ("muse", "MuseData"),
                                             ("piano", "Piano-midi")) if key in base), None)
        info: dict[str, Any] = {"name": os.path.basename(config.data_file), "source": "Boulanger-Lewandowski file",
                "paper_dataset_from": "file name"}
        if guess is None and config.paper_dataset is None:
            # say so: results.json would otherwise present the JSB row as if the data were JSB Chorales
            guess, info["paper_dataset_from"] = "JSB Chorales", "default (no dataset name in the file name)"
            warnings.warn(f"chung2014: {info['name']!r} names none of Nottingham, JSB, MuseData, Piano-midi; "
                          "comparing with the paper's JSB Chorales row (set paper_dataset / --paper-dataset)",
                          stacklevel=4)
    else:
        splits = data.load_chorales(split_seed=config.split_seed, frames=config.frames, progress=config.progress)
        guess = "JSB Chorales"
        info = {"name": f"music21 Bach chorales ({config.frames}-note frames, split_seed={config.split_seed})",
                "source": "music21 corpus", "paper_dataset_from": "music21 Bach chorales"}
    if config.max_sequences is not None:
        splits = {k: v[: config.max_sequences] for k, v in splits.items()}
    info["sequences"] = {k: len(v) for k, v in splits.items()}
    info["frames"] = {k: int(sum(s.shape[0] for s in v)) for k, v in splits.items()}
    info["paper_dataset"] = config.paper_dataset or guess
    if config.paper_dataset is not None:
        info["paper_dataset_from"] = "paper_dataset (--paper-dataset)"
    return splits, info


def _units(config: Chung2014Config, cell: str, n_keys: int) -> int:
    return PAPER_UNITS[cell] if config.budget is None else units_for_budget(cell, n_keys, n_keys, config.budget)


def _model(config: Chung2014Config, cell: str, units: int, n_keys: int, seed: int) -> PianoRollModel:
    torch.manual_seed(seed)  # the same initial weights for every learning-rate candidate of this seed
    kwargs = {"reset_after": config.gru_reset_after} if cell == "gru" else {}
    return PianoRollModel(cell, units, n_keys, backend=config.backend, **kwargs)


def _train_config(config: Chung2014Config, lr: float, epochs: int, seed: int) -> TrainConfig:
    return TrainConfig(optimizer=config.optimizer, lr=lr, epochs=epochs, batch_size=config.batch_size,
                       clip_norm=config.clip_norm, weight_noise_std=config.weight_noise_std, patience=config.patience,
                       restore_best=False, seed=seed, device=config.device,
                       progress=config.progress and config.workers == 1)


def _search(config: Chung2014Config, cell: str, units: int, n_keys: int, seed: int, splits: dict, start: float):
    """Train candidates for ``search_epochs`` epochs, growing the grid past an end that wins; return the trainers
    (by rate), the search records, and whether the winner is still an end of the grid."""
    train, valid = splits["train"], splits["valid"]
    epochs = min(config.search_epochs, config.epochs)
    grid, step, added = lr_candidates(config), lr_step(config), {"low": 0, "high": 0}
    trainers, runs = {}, {}
    while True:
        for lr in grid:
            if lr in runs:
                continue
            trainer = Trainer(_model(config, cell, units, n_keys, seed), _train_config(config, lr, epochs, seed))
            try:
                trainer.fit(train, valid)
            except FloatingPointError as e:  # a learning rate too large for this data is a finding of the search
                runs[lr] = {"lr": lr, "valid_nll": None, "epochs": trainer.epoch, "diverged": str(e)}
                continue
            trainers[lr] = trainer
            runs[lr] = {"lr": lr, "valid_nll": trainer.best_loss, "epochs": trainer.epoch}
        if not trainers:
            raise FloatingPointError(f"chung2014: {cell}: every learning rate diverged ("
                                     f"{', '.join(format(lr, '.2e') for lr in grid)}); try a lower lr_range")
        best = min(trainers, key=lambda lr: trainers[lr].best_loss)
        out_of_time = config.time_limit is not None and time.perf_counter() - start > config.time_limit
        if best == grid[0] and added["low"] < config.lr_extend and not out_of_time:
            grid.insert(0, _round(grid[0] / step))
            added["low"] += 1
        elif best == grid[-1] and added["high"] < config.lr_extend and not out_of_time:
            grid.append(_round(grid[-1] * step))
            added["high"] += 1
        else:
            at_end = len(grid) > 1 and best in (grid[0], grid[-1])
            return trainers, best, [runs[lr] for lr in grid], at_end


def _run_seed(config: Chung2014Config, cell: str, seed: int, splits: dict, n_keys: int) -> dict:
    """The whole protocol for one seed: the search, then the winner continues (same weights, optimizer state and
    random streams, as if never paused) up to ``epochs`` with early stopping, and ends with its best weights."""
    units = _units(config, cell, n_keys)
    train, valid = splits["train"], splits["valid"]
    start, cpu_start = time.perf_counter(), time.process_time()
    trainers, lr, runs, at_end = _search(config, cell, units, n_keys, seed, splits, start)
    best = trainers[lr]
    history = best.history
    left = None if config.time_limit is None else config.time_limit - (time.perf_counter() - start)
    diverged = None
    if history["stop_reason"] == "max_epochs" and best.epoch < config.epochs:
        if left is not None and left <= 0:
            history["stop_reason"] = "time_limit"
        else:
            history["stop_reason"] = None  # continue the winner
            best.config.epochs = config.epochs
            best.config.time_limit = None if left is None else history["seconds"][-1] + left
            try:
                best.fit(train, valid)
            except FloatingPointError as e:  # keep the epochs before it: the best weights are from one of them
                history["stop_reason"], diverged = "diverged", str(e)
    best.model.load_state_dict(best.best_state)
    return {
        "seed": seed, "lr": lr, "lr_at_end_of_grid": at_end, "diverged": diverged,
        "train_nll": best.evaluate(train), "valid_nll": best.best_loss, "test_nll": best.evaluate(splits["test"]),
        "epochs": best.epoch, "best_epoch": history["best_epoch"], "stop_reason": history["stop_reason"],
        "seconds": history["seconds"][-1], "search_seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,  # the whole protocol of this seed, in this process
        "search_epochs": min(config.search_epochs, config.epochs), "lr_search": runs,
        "history": {k: history[k] for k in _HISTORY_KEYS},
    }


_WORKER: dict = {}


def _worker_init(splits_np: dict, threads: int | None) -> None:
    """Runs once in each worker process: hold the data, set the thread count."""
    _WORKER["splits"] = {k: [torch.from_numpy(a) for a in v] for k, v in splits_np.items()}
    if threads is not None:
        torch.set_num_threads(threads)


def _worker_run(config: Chung2014Config, cell: str, seed: int, n_keys: int) -> dict:
    return _run_seed(config, cell, seed, _WORKER["splits"], n_keys)


def _run_all(config: Chung2014Config, splits: dict, n_keys: int, verbose: bool) -> dict[tuple[str, int], dict]:
    """Every (model, seed) run, in this process or in ``workers`` processes (spawned: no forked torch threads)."""
    jobs = [(cell, config.seed + k) for cell in config.models for k in range(config.seeds)]
    done = {}

    def report(cell, seed, r):
        if verbose:
            print(f"{NAMES[cell]} seed {seed}: lr {r['lr']:.2e}, test NLL {r['test_nll']:.3f} "
                  f"({r['search_seconds']:.0f} s)", file=sys.stderr, flush=True)

    if config.workers == 1 or len(jobs) == 1:
        for cell, seed in jobs:
            done[cell, seed] = _run_seed(config, cell, seed, splits, n_keys)
            report(cell, seed, done[cell, seed])
        return done
    splits_np = {k: [s.numpy() for s in v] for k, v in splits.items()}
    with concurrent.futures.ProcessPoolExecutor(min(config.workers, len(jobs)), multiprocessing.get_context("spawn"),
                                                _worker_init, (splits_np, config.threads)) as pool:
        futures = {pool.submit(_worker_run, config, cell, seed, n_keys): (cell, seed) for cell, seed in jobs}
        for f in concurrent.futures.as_completed(futures):
            done[futures[f]] = f.result()
            report(*futures[f], done[futures[f]])
    return done


def _summarize_model(config: Chung2014Config, cell: str, runs: list[dict], n_keys: int) -> dict:
    units = _units(config, cell, n_keys)
    return {
        "cell": cell, "units": units, "parameters": count_parameters(_model(config, cell, units, n_keys, 0)),
        "runs": runs, **{k: summarize([r[k] for r in runs]).to_dict() for k in ("train_nll", "valid_nll", "test_nll")},
    }


def _warnings(results: dict) -> list[str]:
    """Every run whose chosen rate is an end of the grid, or that a limit stopped: said in the results and shown."""
    found = []
    for cell, m in results["models"].items():
        for r in m["runs"]:
            if r["lr_at_end_of_grid"]:
                tried = [x["lr"] for x in r["lr_search"]]
                found.append(f"{NAMES[cell]} seed {r['seed']}: the best learning rate {r['lr']:.2e} is an end of the "
                             f"grid tried ({min(tried):.2e} .. {max(tried):.2e}) after the extensions ran out; "
                             "a rate beyond it might be better")
            if r["stop_reason"] in ("time_limit", "diverged"):
                found.append(f"{NAMES[cell]} seed {r['seed']}: stopped by {r['stop_reason'].replace('_', ' ')} after "
                             f"{r['epochs']} epochs (best epoch {r['best_epoch']}); its numbers are not converged")
    return found


def run(config: Chung2014Config, out: str | None = None, *, verbose: bool = True) -> dict:
    """Train every model of ``config``, write ``results.json`` and ``learning_curves.png`` into ``out`` (if given)."""
    for cell in config.models:
        if cell not in PAPER_UNITS:
            raise ValueError(f"chung2014: expected models among {sorted(PAPER_UNITS)}, got {cell!r}")
    if len(set(config.models)) != len(config.models):  # a repeat would train twice and overwrite the first result
        raise ValueError(f"chung2014: expected each model once, got {list(config.models)}")
    for name in ("epochs", "lr_search", "search_epochs", "batch_size", "patience", "seeds", "workers"):
        value = getattr(config, name)  # checked before the data loads
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"chung2014: expected {name} to be an int >= 1, got {value!r}")
    if isinstance(config.lr_extend, bool) or not isinstance(config.lr_extend, int) or config.lr_extend < 0:
        raise ValueError(f"chung2014: expected lr_extend to be an int >= 0, got {config.lr_extend!r}")
    lr_candidates(config)  # a bad lr_range fails now
    resolve_device(config.device)  # a bad or absent device fails now, not after the data has loaded
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not (
            -(2**63) <= config.seed and config.seed + config.seeds - 1 <= 2**63 - 2):
        raise ValueError(f"chung2014: expected seed .. seed + seeds - 1 to be 64-bit ints (-2**63 .. 2**63 - 2), "
                         f"got seed={config.seed!r}, seeds={config.seeds}")
    for name in ("max_sequences", "threads"):
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"chung2014: expected {name} to be None or an int >= 1, got {value!r}")
    if "gru" in config.models and not config.gru_reset_after and config.backend == "torch":
        raise ValueError("chung2014: backend 'torch' has no GRU with reset_after=False (the paper's form); "
                         "use backend 'fused' or 'reference', or set gru_reset_after=True")
    if config.paper_dataset is not None and config.paper_dataset not in PAPER_TABLE2:
        raise ValueError(f"chung2014: expected paper_dataset among {sorted(PAPER_TABLE2)}, "
                         f"got {config.paper_dataset!r}")
    make_out_folder(out, "chung2014")
    with torch_threads(config.threads):
        return _run(config, out, verbose)


def _run(config, out, verbose: bool) -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    splits, info = _load(config)
    n_keys = splits["train"][0].shape[1]
    info["load_seconds"], info["load_cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu_start
    results: dict[str, Any] = {
        "experiment": "chung2014", "format_version": FORMAT_VERSION,
        "command": config.command or "python -m rnnkit reproduce chung2014",
        "config": dataclasses.asdict(config), "dataset": info,
        "environment": {**environment(), "device": str(resolve_device(config.device)), "workers": config.workers,
                        "cpus": os.cpu_count()},  # what "auto" became; how many processes shared how many CPUs
        "paper": {"dataset": info["paper_dataset"], "table2": PAPER_TABLE2[info["paper_dataset"]],
                  "units": PAPER_UNITS, "parameters": PAPER_PARAMETERS},
        "models": {},
    }
    done = _run_all(config, splits, n_keys, verbose)
    for cell in config.models:
        runs = [done[cell, config.seed + k] for k in range(config.seeds)]
        results["models"][cell] = _summarize_model(config, cell, runs, n_keys)
    results["warnings"] = _warnings(results)
    for w in results["warnings"]:
        warnings.warn(f"chung2014: {w}", RuntimeWarning, stacklevel=3)
    results["seconds_total"] = time.perf_counter() - start
    # CPU time of the loading and of every run: on an idle machine, seconds_total is about this over min(workers, cpus)
    results["cpu_seconds_total"] = info["load_cpu_seconds"] + sum(
        r["cpu_seconds"] for m in results["models"].values() for r in m["runs"])
    validate_results(results)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        fig = plot_learning_curves(results)
        fig.suptitle(f"{info['name']}: validation NLL of the selected runs, mean ± sd over seeds (lower is better)")
        fig.savefig(os.path.join(out, "learning_curves.png"), dpi=120, bbox_inches="tight")
    if verbose:
        print(format_table(results))
        print("\n".join(verdicts(results)))
    return results


