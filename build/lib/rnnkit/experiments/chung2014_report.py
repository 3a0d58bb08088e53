r"""The ``results.json`` of :mod:`rnnkit.experiments.chung2014`: its format check, the table beside the paper's, the
verdicts (which model is better, judged against the spread over seeds), and the figures chapter 5 draws from it."""

from __future__ import annotations

import itertools
import math

from .stats import compare, summarize

__all__ = ["FORMAT_VERSION", "NAMES", "validate_results", "format_table", "verdicts", "plot_learning_curves",
           "plot_lr_search"]

FORMAT_VERSION = 2  # 2: several seeds per model (models[cell]["runs"]), summaries, warnings
NAMES = {"tanh": "tanh", "gru": "GRU", "lstm": "LSTM"}
_CELLS = ("tanh", "gru", "lstm")

# ------------------------------------------------------------------------------------------- results format
_MODEL_KEYS = {"cell": str, "units": int, "parameters": int, "runs": list, "train_nll": dict, "valid_nll": dict,
               "test_nll": dict}
_RUN_KEYS = {"seed": int, "lr": float, "train_nll": float, "valid_nll": float, "test_nll": float, "epochs": int,
             "seconds": float, "history": dict, "lr_search": list, "lr_at_end_of_grid": bool}
_HISTORY_KEYS = ("epoch", "updates", "seconds", "cpu_seconds", "train_loss", "valid_loss")


def _check_run(where: str, r: dict, problems: list) -> None:
    for key, kind in _RUN_KEYS.items():
        value = r.get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            problems.append(f"{where}[{key!r}] should be {kind.__name__}, got {type(value).__name__}")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where}[{key!r}] is not finite: {value}")
    h = r.get("history", {})
    if isinstance(h, dict):
        lengths = {k: len(h.get(k, [])) for k in _HISTORY_KEYS}
        if len(set(lengths.values())) != 1 or lengths["epoch"] != r.get("epochs"):
            problems.append(f"{where}['history'] lists should all have 'epochs' entries, got {lengths}")
        seconds = h.get("seconds", [])
        if any(b < a for a, b in itertools.pairwise(seconds)):
            problems.append(f"{where}['history']['seconds'] should not decrease")
        if isinstance(r.get("valid_nll"), float) and h.get("valid_loss"):
            if abs(min(h["valid_loss"]) - r["valid_nll"]) > 1e-9:
                problems.append(f"{where}['valid_nll'] should be the best validation loss of its history")
    if isinstance(r.get("lr_search"), list) and isinstance(r.get("lr"), float):
        if r["lr"] not in [x.get("lr") for x in r["lr_search"]]:
            problems.append(f"{where}['lr'] should be one of the rates in its lr_search")


def validate_results(results: dict) -> None:
    """Raise ``ValueError`` listing every way ``results`` departs from the ``results.json`` format."""
    problems = []
    for key in ("experiment", "format_version", "command", "config", "dataset", "paper", "models", "seconds_total",
                "warnings"):
        if key not in results:
            problems.append(f"missing top-level key {key!r}")
    if results.get("experiment") != "chung2014":
        problems.append(f"experiment should be 'chung2014', got {results.get('experiment')!r}")
    if results.get("format_version") != FORMAT_VERSION:
        problems.append(f"format_version should be {FORMAT_VERSION}, got {results.get('format_version')!r}")
    models = results.get("models", {})
    if not isinstance(models, dict) or not models:
        problems.append("models should be a non-empty dict")
        models = {}
    for cell, m in models.items():
        if cell not in _CELLS:
            problems.append(f"unknown model {cell!r}")
        for key, kind in _MODEL_KEYS.items():
            if not isinstance(m.get(key), kind) or isinstance(m.get(key), bool):
                problems.append(f"models[{cell!r}][{key!r}] should be {kind.__name__}, got {type(m.get(key)).__name__}")
        runs = m.get("runs") if isinstance(m.get("runs"), list) else []
        if not runs:
            problems.append(f"models[{cell!r}]['runs'] should list one run per seed, got none")
        for k, r in enumerate(runs):
            _check_run(f"models[{cell!r}]['runs'][{k}]", r if isinstance(r, dict) else {}, problems)
        for key in ("train_nll", "valid_nll", "test_nll"):  # each summary must be the one its runs give
            try:
                expected = summarize([r[key] for r in runs]).to_dict()
            except (KeyError, TypeError, ValueError):
                continue  # already reported above
            got = m.get(key)
            if not isinstance(got, dict) or any(
                    (expected[s] is None) != (got.get(s) is None) or
                    (expected[s] is not None and not isinstance(got.get(s), (int, float))) or
                    (expected[s] is not None and abs(expected[s] - got[s]) > 1e-9) for s in expected):
                problems.append(f"models[{cell!r}][{key!r}] should summarise its runs as {expected}, got {got}")
    if problems:
        raise ValueError("chung2014 results.json: " + "; ".join(problems))


def _summary(m: dict, key: str):
    return summarize([r[key] for r in m["runs"]])


def format_table(results: dict) -> str:
    """Our NLLs (mean ± sd over seeds) beside the paper's Table 2 row for the matching dataset (markdown)."""
    paper = results["paper"]
    seeds = {len(m["runs"]) for m in results["models"].values()}
    lines = [f"Average negative log-probability per frame (nats), mean ± sd over {'/'.join(map(str, seeds))} seeds, "
             f"{results['dataset']['name']}; paper: Chung et al. 2014, Table 2, {paper['dataset']}",
             "", "| model | units | parameters | train | valid | test | paper train | paper test |",
             "|---|---|---|---|---|---|---|---|"]
    for cell, m in results["models"].items():
        p_train, p_test = paper["table2"][cell]
        ours = " | ".join(_summary(m, k).format() for k in ("train_nll", "valid_nll", "test_nll"))
        lines.append(f"| {NAMES[cell]} | {m['units']} | {m['parameters']:,} | {ours} | {p_train:.2f} | {p_test:.2f} |")
    return "\n".join(lines)


def verdicts(results: dict, key: str = "test_nll") -> list[str]:
    """One sentence per pair of models: which is better on ``key`` (lower), or that the difference is within the
    spread (:func:`rnnkit.experiments.stats.compare`). The book prints these rather than typing a ranking."""
    models = results["models"]
    name = {"tanh": "the tanh-RNN", "gru": "the GRU", "lstm": "the LSTM"}
    out = []
    cells = list(models)
    for i, a in enumerate(cells):
        for b in cells[i + 1:]:
            sa, sb = _summary(models[a], key), _summary(models[b], key)
            diff, spread = abs(sa.mean - sb.mean), None if sa.sd is None or sb.sd is None else sa.sd + sb.sd
            order = compare(sa, sb)
            if spread is None:
                out.append(f"{name[a]} vs {name[b]}: one seed each, so no spread to judge a difference of "
                           f"{diff:.3f} against; no winner called.")
            elif order == 0:
                out.append(f"{name[a]} vs {name[b]}: the means differ by {diff:.3f}, within the spread "
                           f"(sd {sa.sd:.3f} + {sb.sd:.3f} = {spread:.3f}): no winner.")
            else:
                win, lose = (a, b) if order < 0 else (b, a)
                out.append(f"{name[win]} is better than {name[lose]}: lower by {diff:.3f}, more than the spread "
                           f"(sd {sa.sd:.3f} + {sb.sd:.3f} = {spread:.3f}).")
    return out


def _band(runs: list[dict], x: str) -> tuple[list, list, list]:
    """Per epoch: the mean over seeds of ``x`` and of the validation NLL, and its sd (0 where one run is left)."""
    longest = max(len(r["history"]["epoch"]) for r in runs)
    xs, mean, sd = [], [], []
    for e in range(longest):
        alive = [r["history"] for r in runs if len(r["history"]["epoch"]) > e]
        s = summarize([h["valid_loss"][e] for h in alive])
        xs.append(sum(h[x][e] for h in alive) / len(alive))
        mean.append(s.mean)
        sd.append(s.sd or 0.0)
    return xs, mean, sd


def plot_learning_curves(results: dict, axes=None):
    """Validation NLL against epochs, updates and wall-clock seconds: per model the mean over seeds (line) and
    ± one sd (band; seeds that stopped early drop out of later epochs). Returns the figure."""
    if axes is None:  # a bare Figure (no pyplot): works headless, and savefig needs no backend
        from matplotlib.figure import Figure

        axes = Figure(figsize=(13, 3.6)).subplots(1, 3, sharey=True)
    fig = axes[0].figure
    for k, (cell, m) in enumerate(results["models"].items()):
        for ax, x in zip(axes, ("epoch", "updates", "seconds"), strict=True):
            xs, mean, sd = _band(m["runs"], x)
            ax.plot(xs, mean, color=f"C{k}", label=f"{NAMES[cell]} ({m['parameters']:,} params)")
            low = [a - b for a, b in zip(mean, sd, strict=True)]
            high = [a + b for a, b in zip(mean, sd, strict=True)]
            ax.fill_between(xs, low, high,
                            color=f"C{k}", alpha=0.25, lw=0)
    for ax, label in zip(axes, ("epoch", "parameter updates", "wall-clock time (s)"), strict=True):
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation NLL (nats per frame)")
    axes[0].legend()
    return fig


def plot_lr_search(results: dict, ax):
    """Validation NLL after the search epochs against the learning rate: per model the mean over the seeds that
    tried a rate (line, ± sd band where two or more did), each seed's chosen rate marked."""
    for k, (cell, m) in enumerate(results["models"].items()):
        by_lr: dict[float, list[float]] = {}
        for r in m["runs"]:
            for x in r["lr_search"]:
                if x["valid_nll"] is not None:
                    by_lr.setdefault(x["lr"], []).append(x["valid_nll"])
        lrs = sorted(by_lr)
        stats = [summarize(by_lr[lr]) for lr in lrs]
        mean = [s.mean for s in stats]
        sd = [s.sd or 0.0 for s in stats]
        ax.plot(lrs, mean, "o-", color=f"C{k}", ms=4, label=NAMES[cell])
        low = [a - b for a, b in zip(mean, sd, strict=True)]
        high = [a + b for a, b in zip(mean, sd, strict=True)]
        ax.fill_between(lrs, low, high, color=f"C{k}", alpha=0.25, lw=0)
        chosen = [r["lr"] for r in m["runs"]]
        ax.plot(chosen, [summarize(by_lr[lr]).mean for lr in chosen], "*", color=f"C{k}", ms=13, mec="k",
                ls="none")
    from matplotlib.ticker import NullFormatter

    tried = sorted({x["lr"] for m in results["models"].values() for r in m["runs"] for x in r["lr_search"]})
    ax.set_xscale("log")
    ax.set_xticks(tried, [f"{lr:g}" for lr in tried])  # the grid itself, not 3x10^-3 minor labels that collide
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("learning rate (RMSProp)")
    ax.set_ylabel("validation NLL after\nthe search (nats/frame)")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax.figure
