"""``python -m rnnkit`` (or ``rnnkit``): the course's command line. Thin: parse arguments, call the modules.

    rnnkit reproduce chung2014 [--seeds N] [--data-file PATH] [--models tanh,gru,lstm] [--epochs N] [--lr-search K] ...
    rnnkit tasks [--tasks adding,copy,parity] [--cells tanh,gru,lstm] [--quick] ...
    rnnkit train charlm|pianoroll --out MODEL.pt [--cell gru] [--hidden 128] [--epochs 5] ...
    rnnkit sample MODEL.pt [--temperature 0.8] [--top-k 10] [--seed 0] ...

Every subcommand has ``--help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pickle
import shlex
import sys
from typing import Any

import torch

CELL_CHOICES = ("tanh", "gru", "lstm")


def _csv(choices):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(choices)}, got {text!r}")
        twice = sorted({t for t in items if items.count(t) > 1})
        if twice:  # each would be trained twice, and the second run would overwrite the first in the results
            raise argparse.ArgumentTypeError(f"expected each name once, got {','.join(twice)} more than once "
                                             f"in {text!r}")
        return items
    return parse


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not -(2**63) <= value <= 2**63 - 2:  # torch seeds are 64-bit (and the weight-noise stream uses seed + 1)
        raise argparse.ArgumentTypeError(f"expected a seed in -2**63 .. 2**63 - 2, got {text}")
    return value


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 (0: no limit), got {text!r}")
    return value


def _command(argv) -> str:
    return "python -m rnnkit " + shlex.join(argv)


def _reproduce(args, argv) -> int:
    from .experiments import chung2014

    overrides: dict[str, Any] = dict(chung2014.QUICK) if args.quick else {}
    for name in ("data_file", "models", "epochs", "lr_search", "search_epochs", "seed", "device", "budget", "backend",
                 "time_limit", "patience", "batch_size", "paper_dataset", "seeds", "workers"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if overrides.get("time_limit") == 0:
        overrides["time_limit"] = None  # --time-limit 0: no limit
    config = chung2014.Chung2014Config(**overrides, progress=not args.no_progress, command=_command(argv))
    chung2014.run(config, args.out)
    print(f"wrote {args.out}/results.json and {args.out}/learning_curves.png", file=sys.stderr)
    return 0


def _tasks(args, argv) -> int:
    from .experiments import tasks

    overrides: dict[str, Any] = dict(tasks.QUICK) if args.quick else {}
    for name in ("tasks", "cells", "epochs", "seed", "device", "backend", "budget", "adding_lengths", "copy_delays",
                 "parity_lengths"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    config = tasks.TasksConfig(**overrides, command=_command(argv))
    tasks.run(config, args.out)
    print(f"wrote {args.out}/tasks.json", file=sys.stderr)
    return 0


def _train(args, argv) -> int:
    from . import data
    from .models import CharLM, PianoRollModel
    from .train import TrainConfig, Trainer

    only = {"charlm": ("max_chars", "max_len"), "pianoroll": ("data_file",)}  # flags that mean nothing to the other
    for name in only["pianoroll" if args.model == "charlm" else "charlm"]:
        if getattr(args, name) is not None:
            raise ValueError(f"--{name.replace('_', '-')} applies to `rnnkit train "
                             f"{'pianoroll' if args.model == 'charlm' else 'charlm'}`, not {args.model}")
    if args.resume and not args.checkpoint:
        raise ValueError("--resume needs --checkpoint (the file to continue from)")
    if args.checkpoint and os.path.abspath(args.checkpoint) == os.path.abspath(args.out):
        raise ValueError("--checkpoint and --out must be different files (the model would overwrite the checkpoint)")
    # Before any data or training: a bad option fails in a second, not after the epochs. --clip-norm 0: no clipping.
    config = TrainConfig(optimizer=args.optimizer, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                         clip_norm=args.clip_norm or None, weight_noise_std=args.weight_noise, patience=args.patience,
                         seed=args.seed, device=args.device, checkpoint=args.checkpoint, resume=args.resume,
                         progress=not args.no_progress)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.manual_seed(args.seed)
    extra = {}
    if args.model == "charlm":
        corpus = data.load_char_corpus(max_chars=200_000 if args.max_chars is None else args.max_chars)
        if len(corpus) < 2:  # the split below would blame "documents", which the user never chose
            raise ValueError(f"--max-chars {args.max_chars} leaves {len(corpus)} document; the train/valid split "
                             "needs at least 2 (try --max-chars 3000 or more)")
        train_c, valid_c = corpus.split(0.1, seed=args.seed)
        max_len = 128 if args.max_len is None else args.max_len
        train, valid = train_c.sequences(max_len), valid_c.sequences(max_len)
        kwargs = {"vocab_size": len(corpus.vocab), "hidden_size": args.hidden, "cell": args.cell}
        model: torch.nn.Module = CharLM(**kwargs)
        extra["vocab"] = corpus.vocab.to_dict()
    else:
        if args.data_file:
            splits = data.load_bl_file(args.data_file)
        else:
            splits = data.load_chorales(progress=not args.no_progress)
        train, valid = splits["train"], splits["valid"]
        kwargs = {"cell": args.cell, "hidden_size": args.hidden, "n_keys": train[0].shape[1]}
        model = PianoRollModel(**kwargs)
    trainer = Trainer(model, config)
    history = trainer.fit(train, valid)
    torch.save({"kind": args.model, "kwargs": kwargs, "state_dict": model.state_dict(), **extra,
                "command": _command(argv), "config": dataclasses.asdict(config)}, args.out)
    best = history["best_epoch"]
    print(f"epochs {len(history['epoch'])}, best validation loss {min(history['valid_loss']):.4f} (epoch {best}), "
          f"{history['seconds'][-1]:.1f} s; wrote {args.out}")
    return 0


def _sample(args, argv) -> int:
    from .data.text import CharVocab
    from .models import CharLM, PianoRollModel
    from .sampling import sample_piano_roll, sample_sequence

    try:
        saved = torch.load(args.model_file, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as e:  # not a torch file, truncated, foreign objects
        raise ValueError(f"{args.model_file} is not a model saved by `rnnkit train` ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'unreadable'})") from None
    if not isinstance(saved, dict):
        saved = {}
    if saved.get("kind") == "pianoroll" and (args.top_k is not None or args.prompt):
        raise ValueError("--top-k and --prompt apply to charlm models; a pianoroll model samples each key "
                         "independently (use --temperature)")
    if saved.get("kind") == "charlm":
        model = CharLM(**saved["kwargs"])
        model.load_state_dict(saved["state_dict"])
        vocab = CharVocab.from_dict(saved["vocab"])
        prompt = [vocab.eos, *vocab.encode(args.prompt).tolist()] if args.prompt else None
        samples = sample_sequence(model, eos=vocab.eos, prompt=prompt, max_len=args.max_len,
                                  temperature=args.temperature, top_k=args.top_k, num_samples=args.num, seed=args.seed)
        for s in samples:
            print(args.prompt + vocab.decode(s))
            print("---")
    elif saved.get("kind") == "pianoroll":
        from .data import piano_roll_to_pitches

        roll_model = PianoRollModel(**saved["kwargs"])
        roll_model.load_state_dict(saved["state_dict"])
        rolls = sample_piano_roll(roll_model, args.max_len, temperature=args.temperature, num_samples=args.num,
                                  seed=args.seed, num_keys=saved["kwargs"]["n_keys"])
        print(json.dumps([piano_roll_to_pitches(r) for r in rolls]))
    else:
        raise SystemExit(f"rnnkit sample: {args.model_file} is not a model saved by `rnnkit train`")
    return 0


def _add_run_options(parser: argparse.ArgumentParser, out: str, *, seed_help: str) -> None:
    """The options every experiment subcommand shares."""
    parser.add_argument("--backend", choices=["reference", "fused", "torch"], help="rnnkit layer backend")
    parser.add_argument("--seed", type=_seed, help=seed_help)
    parser.add_argument("--out", default=out, help=f"output folder (default {out})")
    parser.add_argument("--device", help="cpu, cuda or auto")
    parser.add_argument("--quick", action="store_true", help="a smoke run in seconds (numbers mean nothing)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnkit", description="Recurrent networks course toolkit: reproduce the "
                                     "chapter 5 experiments, train and sample small models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rep = sub.add_parser("reproduce", help="rerun a paper's experiment (chung2014)",
                         description="Chung et al. 2014 on polyphonic music: tanh vs GRU vs LSTM with ~20k parameters.")
    rep.add_argument("experiment", choices=["chung2014"], help="which paper")
    rep.add_argument("--data-file", help="Boulanger-Lewandowski pickle/JSON (default: music21's Bach chorales)")
    rep.add_argument("--models", type=_csv(CELL_CHOICES), help="comma-separated cells (default tanh,gru,lstm)")
    rep.add_argument("--paper-dataset", choices=["Nottingham", "JSB Chorales", "MuseData", "Piano-midi"],
                     help="row of the paper's Table 2 to print beside ours (default: guessed from the file name)")
    rep.add_argument("--epochs", type=int, help="maximum epochs per run")
    rep.add_argument("--seeds", type=int, help="repeats of the whole protocol per model, seeds --seed, --seed + 1, "
                     "... (default 3)")
    rep.add_argument("--workers", type=int, help="processes running (model, seed) runs side by side (default 2)")
    rep.add_argument("--lr-search", type=int, help="K learning-rate candidates per model (a geometric grid)")
    rep.add_argument("--search-epochs", type=int, help="epochs per candidate before the best one continues")
    rep.add_argument("--budget", type=int, help="equal parameter budget instead of the paper's 100/46/36 units")
    rep.add_argument("--patience", type=int, help="early-stopping patience (epochs)")
    rep.add_argument("--batch-size", type=int, help="sequences per update")
    rep.add_argument("--time-limit", type=_non_negative_seconds,
                     help="wall-clock seconds per (model, seed) run, search included (0: no limit)")
    _add_run_options(rep, "results/chung2014", seed_help="first seed for weights, data order and noise")
    rep.add_argument("--no-progress", action="store_true", help="no progress bars")
    rep.set_defaults(func=_reproduce)

    tk = sub.add_parser("tasks", help="adding / copy / parity at growing lengths",
                        description="Train tanh, GRU and LSTM on long-range synthetic tasks at growing lengths.")
    tk.add_argument("--tasks", type=_csv(("adding", "copy", "parity")), help="comma-separated (default all)")
    tk.add_argument("--cells", type=_csv(CELL_CHOICES), help="comma-separated (default tanh,gru,lstm)")
    tk.add_argument("--adding-lengths", type=_int_list, help="e.g. 10,25,50,100")
    tk.add_argument("--copy-delays", type=_int_list, help="e.g. 5,10,20,40")
    tk.add_argument("--parity-lengths", type=_int_list, help="e.g. 2,4,6,8")
    tk.add_argument("--epochs", type=int, help="passes over the training samples")
    tk.add_argument("--budget", type=int, help="recurrent parameters per model")
    _add_run_options(tk, "results/tasks", seed_help="seed for data, weights and data order")
    tk.set_defaults(func=_tasks)

    tr = sub.add_parser("train", help="train a character LM or a piano-roll model",
                        description="Train CharLM on the offline docstring corpus or PianoRollModel on chorales.")
    tr.add_argument("model", choices=["charlm", "pianoroll"], help="what to train")
    tr.add_argument("--out", required=True, help="where to save the trained model (.pt)")
    tr.add_argument("--cell", choices=CELL_CHOICES, default="gru", help="recurrent cell (default gru)")
    tr.add_argument("--hidden", type=int, default=128, help="hidden units (default 128)")
    tr.add_argument("--epochs", type=int, default=5, help="passes over the training set (default 5)")
    tr.add_argument("--lr", type=float, default=3e-3, help="learning rate (default 3e-3)")
    tr.add_argument("--optimizer", choices=["rmsprop", "adam"], default="adam", help="default adam")
    tr.add_argument("--batch-size", type=int, default=32, help="sequences per update (default 32)")
    tr.add_argument("--clip-norm", type=float, default=1.0, help="gradient norm clipping threshold (default 1; 0: off)")
    tr.add_argument("--weight-noise", type=float, default=0.0, help="weight noise std (default 0: off)")
    tr.add_argument("--patience", type=int, help="early-stopping patience (epochs)")
    tr.add_argument("--seed", type=_seed, default=0, help="seed for weights, data order and noise (default 0)")
    tr.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    tr.add_argument("--checkpoint", help="checkpoint path, written every epoch")
    tr.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    tr.add_argument("--data-file", help="pianoroll: Boulanger-Lewandowski file (default: chorales)")
    tr.add_argument("--max-chars", type=int, help="charlm: corpus size in characters (default 200000)")
    tr.add_argument("--max-len", type=int, help="charlm: characters per training sequence (default 128)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")
    tr.set_defaults(func=_train)

    sa = sub.add_parser("sample", help="sample from a model saved by `rnnkit train`",
                        description="Print text (charlm) or a JSON list of frames of MIDI pitches (pianoroll).")
    sa.add_argument("model_file", help="a .pt file written by `rnnkit train --out`")
    sa.add_argument("--temperature", type=float, default=1.0,
                    help="> 0; below 1 sharper, above 1 flatter (default 1)")
    sa.add_argument("--top-k", type=int, help="charlm: draw only among the k most likely characters")
    sa.add_argument("--max-len", type=int, default=200, help="characters or frames (default 200)")
    sa.add_argument("--num", type=int, default=1, help="number of samples")
    sa.add_argument("--prompt", default="", help="charlm: text to start from")
    sa.add_argument("--seed", type=_seed, default=0, help="the same seed gives the same sample (default 0)")
    sa.set_defaults(func=_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, argv)
    except (ValueError, OSError) as error:  # bad input (incl. missing/unreadable files): one line, not a traceback
        print(f"rnnkit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:  # training diverged: the message names the step and what to try
        print(f"rnnkit {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
