r"""Reproduce Chung, Gulcehre, Cho & Bengio (2014), "Empirical evaluation of gated recurrent neural networks on
sequence modeling", Section 4-5 on polyphonic music: tanh-RNN vs GRU vs LSTM of about the same size.

Protocol (the paper's, scaled to a laptop): one recurrent layer with 88 sigmoid outputs (:class:`~rnnkit.models.PianoRollModel`),
RMSProp, weight noise :math:`\sigma = 0.075`, gradient norm rescaled to 1 when above 1, the learning rate chosen
among ``lr_search`` log-uniform candidates by validation NLL, early stopping on validation. To fit a laptop's
minutes the search is two-phase: every candidate trains ``search_epochs`` epochs from the same seed (the same
initial weights and data order, a paired comparison), then only the best continues to convergence. Reported NLLs
are nats per frame (summed over the 88 keys), evaluated without weight noise.

Data: music21's Bach chorales (:func:`rnnkit.data.chorales.load_chorales`) by default — the same composer and quarter-note
frames as the JSB Chorales benchmark, but a different selection and split, so compare trends, not decimals — or any
Boulanger-Lewandowski file (``data_file``) for the exact benchmark.

Outputs in ``out``: ``results.json`` (format checked by :func:`validate_results`), ``learning_curves.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

import torch

from ..models import PianoRollModel, count_parameters, units_for_budget
from ..train import Trainer
from ..train_config import TrainConfig, resolve_device
from .runs import environment, make_out_folder, torch_threads

__all__ = ["Chung2014Config", "QUICK", "PAPER_TABLE2", "PAPER_UNITS", "run", "validate_results", "format_table",
           "plot_learning_curves", "lr_candidates"]

FORMAT_VERSION = 1
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
NAMES = {"tanh": "tanh", "gru": "GRU", "lstm": "LSTM"}


@dataclass
class Chung2014Config:
    models: tuple[str, ...] = ("tanh", "gru", "lstm")  # cell types to train, in this order
    data_file: str | None = None  # Boulanger-Lewandowski pickle/JSON; None: music21's Bach chorales
    frames: str = "quarter"  # chorale frame length ("quarter", "eighth", "sixteenth"); ignored with data_file
    split_seed: int = 0  # chorale train/valid/test split; ignored with data_file
    paper_dataset: str | None = None  # row of Table 2 to print beside ours (None: guessed from the data)
    budget: int | None = None  # None: the paper's units (100/46/36); else the most units within this many parameters
    epochs: int = 200  # maximum epochs of the selected run (search epochs included)
    patience: int = 15  # early stopping: epochs without a better validation NLL
    lr_search: int = 4  # K learning-rate candidates per model, drawn log-uniformly from lr_range
    search_epochs: int = 15  # epochs every candidate trains before the best (on validation) continues
    lr_range: tuple[float, float] = (2e-3, 4e-2)  # bounds of the log-uniform learning-rate draw
    batch_size: int = 16  # sequences per update
    optimizer: str = "rmsprop"  # "rmsprop" (the paper) or "adam"
    weight_noise_std: float = 0.075  # Graves-style weight noise, as in the paper
    clip_norm: float = 1.0  # rescale the gradient when its norm exceeds this (the paper: 1)
    seed: int = 0  # model initialisation, data order, weight noise and the learning-rate draw
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    threads: int | None = 1  # torch CPU threads while running (1: fastest for models this small; None: as is)
    backend: str = "fused"  # rnnkit layer backend: "fused" (fastest here), "reference" or "torch"
    gru_reset_after: bool = False  # False: Cho et al.'s GRU, as in the paper (needs backend reference/fused)
    max_sequences: int | None = None  # keep only the first N sequences of each split (quick runs)
    time_limit: float | None = 150.0  # wall-clock seconds per model, search included; a safety net (None: off)
    progress: bool = True  # tqdm progress bars
    command: str | None = field(default=None, repr=False)  # the command line that ran this (recorded in results)


# --quick: a smoke run in seconds (tests); numbers from it mean nothing.
QUICK = dict(epochs=3, search_epochs=1, lr_search=2, max_sequences=12, patience=2, time_limit=30.0)


def lr_candidates(config: Chung2014Config) -> list[float]:
    """``lr_search`` learning rates, log-uniform on ``lr_range``, drawn with ``seed`` (sorted, same for every model)."""
    lo, hi = config.lr_range
    if not 0 < lo <= hi:
        raise ValueError(f"chung2014: expected 0 < lr_range[0] <= lr_range[1], got {config.lr_range}")
    g = torch.Generator().manual_seed(config.seed)
    u = torch.rand(config.lr_search, generator=g, dtype=torch.float64)
    return sorted(float(math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * x)) for x in u)


def _load(config: Chung2014Config) -> tuple[dict, dict]:
    from .. import data

    if config.data_file is not None:
        splits = data.load_bl_file(config.data_file)
        base = os.path.basename(config.data_file).lower()
        guess = next((name for key, name in (("nott", "Nottingham"), ("jsb", "JSB Chorales"), ("muse", "MuseData"),
                                             ("piano", "Piano-midi")) if key in base), None)
        info = {"name": os.path.basename(config.data_file), "source": "Boulanger-Lewandowski file",
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


def _model(config: Chung2014Config, cell: str, units: int, n_keys: int) -> PianoRollModel:
    torch.manual_seed(config.seed)  # the same initial weights for every learning-rate candidate
    kwargs = {"reset_after": config.gru_reset_after} if cell == "gru" else {}
    return PianoRollModel(cell, units, n_keys, backend=config.backend, **kwargs)


def _train_config(config: Chung2014Config, lr: float, epochs: int) -> TrainConfig:
    return TrainConfig(optimizer=config.optimizer, lr=lr, epochs=epochs, batch_size=config.batch_size,
                       clip_norm=config.clip_norm, weight_noise_std=config.weight_noise_std, patience=config.patience,
                       restore_best=False, seed=config.seed, device=config.device, progress=config.progress)


def _run_model(config: Chung2014Config, cell: str, splits: dict, n_keys: int) -> dict:
    """Search: every candidate trains ``search_epochs`` epochs from the same start; the one with the best validation
    NLL then continues (same weights, optimizer state and random streams, as if never paused) up to ``epochs``
    with early stopping, and ends with its best-validation weights."""
    units = _units(config, cell, n_keys)
    train, valid = splits["train"], splits["valid"]
    start = time.perf_counter()
    search_epochs = min(config.search_epochs, config.epochs)
    trainers, runs = [], []
    for lr in lr_candidates(config):
        trainer = Trainer(_model(config, cell, units, n_keys), _train_config(config, lr, search_epochs))
        try:
            trainer.fit(train, valid)
        except FloatingPointError as e:  # a learning rate too large for this data is a finding of the search
            runs.append({"lr": lr, "valid_nll": None, "epochs": trainer.epoch, "diverged": str(e)})
            continue
        trainers.append(trainer)
        runs.append({"lr": lr, "valid_nll": trainer.best_loss, "epochs": trainer.epoch})
    if not trainers:
        raise FloatingPointError(f"chung2014: {cell}: every learning rate diverged ("
                                 f"{', '.join(format(r['lr'], '.2e') for r in runs)}); try a lower lr_range")
    best = min(trainers, key=lambda t: t.best_loss)
    history = best.history
    left = None if config.time_limit is None else config.time_limit - (time.perf_counter() - start)
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
                history["stop_reason"] = "diverged"
                warnings.warn(f"chung2014: {cell} diverged after epoch {best.epoch}; reporting its best epoch ({e})",
                              RuntimeWarning, stacklevel=2)
    best.model.load_state_dict(best.best_state)
    return {
        "cell": cell, "units": units, "parameters": count_parameters(best.model), "lr": best.config.lr,
        "train_nll": best.evaluate(train), "valid_nll": best.best_loss, "test_nll": best.evaluate(splits["test"]),
        "epochs": best.epoch, "best_epoch": history["best_epoch"], "stop_reason": history["stop_reason"],
        "seconds": history["seconds"][-1], "search_seconds": time.perf_counter() - start,
        "search_epochs": search_epochs, "lr_search": runs,
        "history": {k: history[k] for k in ("epoch", "updates", "seconds", "cpu_seconds", "train_loss", "valid_loss")},
    }


def run(config: Chung2014Config, out: str | None = None, *, verbose: bool = True) -> dict:
    """Train every model of ``config``, write ``results.json`` and ``learning_curves.png`` into ``out`` (if given)."""
    for cell in config.models:
        if cell not in PAPER_UNITS:
            raise ValueError(f"chung2014: expected models among {sorted(PAPER_UNITS)}, got {cell!r}")
    if len(set(config.models)) != len(config.models):  # a repeat would train twice and overwrite the first result
        raise ValueError(f"chung2014: expected each model once, got {list(config.models)}")
    for name in ("epochs", "lr_search", "search_epochs", "batch_size", "patience"):  # checked before the data loads
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"chung2014: expected {name} to be an int >= 1, got {value!r}")
    resolve_device(config.device)  # a bad or absent device fails now, not after the data has loaded
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not -(2**63) <= config.seed <= 2**63 - 2:
        raise ValueError(f"chung2014: expected seed to be a 64-bit int (-2**63 .. 2**63 - 2), got {config.seed!r}")
    for name in ("max_sequences", "threads"):
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"chung2014: expected {name} to be None or an int >= 1, got {value!r}")
    if "gru" in config.models and not config.gru_reset_after and config.backend == "torch":
        raise ValueError("chung2014: backend 'torch' has no GRU with reset_after=False (the paper's form); "
                         "use backend 'fused' or 'reference', or set gru_reset_after=True")
    if config.paper_dataset is not None and config.paper_dataset not in PAPER_TABLE2:
        raise ValueError(f"chung2014: expected paper_dataset among {sorted(PAPER_TABLE2)}, got {config.paper_dataset!r}")
    make_out_folder(out, "chung2014")
    with torch_threads(config.threads):
        return _run(config, out, verbose)


def _run(config, out, verbose: bool) -> dict:
    start = time.perf_counter()
    splits, info = _load(config)
    n_keys = splits["train"][0].shape[1]
    info["load_seconds"] = time.perf_counter() - start
    results = {
        "experiment": "chung2014", "format_version": FORMAT_VERSION,
        "command": config.command or "python -m rnnkit reproduce chung2014",
        "config": dataclasses.asdict(config), "dataset": info,
        "environment": {**environment(), "device": str(resolve_device(config.device))},  # what "auto" became
        "paper": {"dataset": info["paper_dataset"], "table2": PAPER_TABLE2[info["paper_dataset"]],
                  "units": PAPER_UNITS, "parameters": PAPER_PARAMETERS},
        "models": {},
    }
    for cell in config.models:
        results["models"][cell] = _run_model(config, cell, splits, n_keys)
        if verbose:
            r = results["models"][cell]
            print(f"{NAMES[cell]}: {r['units']} units, {r['parameters']} parameters, lr {r['lr']:.2e}, "
                  f"test NLL {r['test_nll']:.3f} ({r['search_seconds']:.0f} s)", file=sys.stderr, flush=True)
    results["seconds_total"] = time.perf_counter() - start
    validate_results(results)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        fig = plot_learning_curves(results)
        fig.suptitle(f"{info['name']}: validation NLL of each model's selected run (lower is better)")
        fig.savefig(os.path.join(out, "learning_curves.png"), dpi=120, bbox_inches="tight")
    if verbose:
        print(format_table(results))
    return results


# ------------------------------------------------------------------------------------------- results format
_MODEL_KEYS = {"cell": str, "units": int, "parameters": int, "lr": float, "train_nll": float, "valid_nll": float,
               "test_nll": float, "epochs": int, "seconds": float, "history": dict, "lr_search": list}
_HISTORY_KEYS = ("epoch", "updates", "seconds", "cpu_seconds", "train_loss", "valid_loss")


def validate_results(results: dict) -> None:
    """Raise ``ValueError`` listing every way ``results`` departs from the ``results.json`` format."""
    problems = []
    for key in ("experiment", "format_version", "command", "config", "dataset", "paper", "models", "seconds_total"):
        if key not in results:
            problems.append(f"missing top-level key {key!r}")
    if results.get("experiment") != "chung2014":
        problems.append(f"experiment should be 'chung2014', got {results.get('experiment')!r}")
    models = results.get("models", {})
    if not isinstance(models, dict) or not models:
        problems.append("models should be a non-empty dict")
        models = {}
    for cell, r in models.items():
        if cell not in PAPER_UNITS:
            problems.append(f"unknown model {cell!r}")
        for key, kind in _MODEL_KEYS.items():
            value = r.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                problems.append(f"models[{cell!r}][{key!r}] should be {kind.__name__}, got {type(value).__name__}")
            elif kind is float and not math.isfinite(value):
                problems.append(f"models[{cell!r}][{key!r}] is not finite: {value}")
        h = r.get("history", {})
        if isinstance(h, dict):
            lengths = {k: len(h.get(k, [])) for k in _HISTORY_KEYS}
            if len(set(lengths.values())) != 1 or lengths["epoch"] != r.get("epochs"):
                problems.append(f"models[{cell!r}]['history'] lists should all have 'epochs' entries, got {lengths}")
            seconds = h.get("seconds", [])
            if any(b < a for a, b in zip(seconds, seconds[1:])):
                problems.append(f"models[{cell!r}]['history']['seconds'] should not decrease")
        if isinstance(r.get("valid_nll"), float) and isinstance(h, dict) and h.get("valid_loss"):
            if abs(min(h["valid_loss"]) - r["valid_nll"]) > 1e-9:
                problems.append(f"models[{cell!r}]['valid_nll'] should be the best validation loss of its history")
    if problems:
        raise ValueError("chung2014 results.json: " + "; ".join(problems))


def format_table(results: dict) -> str:
    """Our NLLs beside the paper's Table 2 row for the matching dataset (markdown)."""
    paper = results["paper"]
    lines = [f"Average negative log-probability per frame (nats), {results['dataset']['name']}; "
             f"paper: Chung et al. 2014, Table 2, {paper['dataset']}",
             "", "| model | units | parameters | lr | epochs | train | valid | test | paper train | paper test |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for cell, r in results["models"].items():
        p_train, p_test = paper["table2"][cell]
        lines.append(f"| {NAMES[cell]} | {r['units']} | {r['parameters']:,} | {r['lr']:.2e} | {r['epochs']} | "
                     f"{r['train_nll']:.2f} | {r['valid_nll']:.2f} | {r['test_nll']:.2f} | "
                     f"{p_train:.2f} | {p_test:.2f} |")
    return "\n".join(lines)


def plot_learning_curves(results: dict, axes=None):
    """Validation NLL against epochs, updates and wall-clock seconds, one line per model; returns the figure."""
    if axes is None:  # a bare Figure (no pyplot): works headless, and savefig needs no backend
        from matplotlib.figure import Figure

        axes = Figure(figsize=(13, 3.6)).subplots(1, 3, sharey=True)
    fig = axes[0].figure
    for cell, r in results["models"].items():
        h = r["history"]
        for ax, x in zip(axes, ("epoch", "updates", "seconds")):
            ax.plot(h[x], h["valid_loss"], label=f"{NAMES[cell]} ({r['parameters']:,} params)")
    for ax, label in zip(axes, ("epoch", "parameter updates", "wall-clock time (s)")):
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation NLL (nats per frame)")
    axes[0].legend()
    return fig
