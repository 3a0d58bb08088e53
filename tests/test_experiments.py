"""rnnkit.experiments: a --quick rerun writes results in the documented format, and the committed book results
(book/results/chung2014/) pass the same checks."""

import copy
import json
import math
import os

import pytest

from rnnkit.__main__ import main
from rnnkit.experiments import chung2014, tasks

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "book", "results", "chung2014")


@pytest.fixture(scope="module")
def bl_file(tmp_path_factory):
    """A tiny Boulanger-Lewandowski JSON file (MIDI pitch lists per frame)."""
    import random

    r = random.Random(0)
    seq = lambda: [[p for p in range(55, 75) if r.random() < 0.15] for _ in range(r.randint(4, 9))]  # noqa: E731
    path = tmp_path_factory.mktemp("data") / "jsb_tiny.json"
    path.write_text(json.dumps({"train": [seq() for _ in range(8)], "valid": [seq() for _ in range(3)],
                                "test": [seq() for _ in range(3)]}))
    return str(path)


@pytest.fixture(scope="module")
def quick_run(bl_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("chung")
    code = main(["reproduce", "chung2014", "--quick", "--data-file", bl_file, "--out", str(out), "--no-progress",
                 "--models", "tanh,gru", "--seed", "3"])
    assert code == 0
    return out


def test_quick_reproduction_writes_valid_results(quick_run, capsys):
    results = json.loads((quick_run / "results.json").read_text())
    chung2014.validate_results(results)
    assert results["environment"]["device"] == "cpu"  # the device actually used ("auto" resolved)
    assert list(results["models"]) == ["tanh", "gru"]
    assert results["config"]["seed"] == 3 and results["config"]["weight_noise_std"] == 0.075
    assert "--quick" in results["command"] and "--seed 3" in results["command"]
    assert results["dataset"]["sequences"] == {"train": 8, "valid": 3, "test": 3}
    assert results["paper"]["dataset"] == "JSB Chorales"  # guessed from the file name
    gru = results["models"]["gru"]
    assert gru["units"] == 46 and gru["parameters"] == 22_904
    assert [r["seed"] for r in gru["runs"]] == [3, 4]  # QUICK repeats the protocol for 2 seeds from --seed
    for r in gru["runs"]:
        assert len(r["lr_search"]) >= 3 and r["lr"] in [x["lr"] for x in r["lr_search"]]
    values = [r["test_nll"] for r in gru["runs"]]
    assert gru["test_nll"]["mean"] == pytest.approx(sum(values) / 2)
    assert gru["test_nll"]["sd"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)  # sample sd of two
    assert (quick_run / "learning_curves.png").stat().st_size > 10_000


def test_table_shows_ours_beside_the_paper(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    table = chung2014.format_table(results)
    assert "| GRU | 46 | 22,904 |" in table and "| 6.94 | 8.54 |" in table  # the paper's JSB GRU train / test
    tanh = results["models"]["tanh"]["test_nll"]
    assert f"| {tanh['mean']:.2f} ± {tanh['sd']:.2f} |" in table


def test_validate_results_catches_broken_files(quick_run):
    good = json.loads((quick_run / "results.json").read_text())
    chung2014.validate_results(good)
    broken = copy.deepcopy(good)
    del broken["models"]["gru"]["runs"][1]["test_nll"]
    with pytest.raises(ValueError, match=r"models\['gru'\]\['runs'\]\[1\]\['test_nll'\] should be float"):
        chung2014.validate_results(broken)
    broken = copy.deepcopy(good)
    broken["models"]["tanh"]["runs"][0]["history"]["valid_loss"].append(1.0)
    with pytest.raises(ValueError, match="history"):
        chung2014.validate_results(broken)
    broken = copy.deepcopy(good)
    broken["models"]["tanh"]["runs"][0]["valid_nll"] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        chung2014.validate_results(broken)
    broken = copy.deepcopy(good)  # a summary that is not the one its runs give (e.g. edited by hand)
    broken["models"]["gru"]["test_nll"]["mean"] -= 0.5
    with pytest.raises(ValueError, match=r"models\['gru'\]\['test_nll'\] should summarise its runs"):
        chung2014.validate_results(broken)
    broken = copy.deepcopy(good)
    broken["models"]["gru"]["runs"][0]["lr"] = 123.0
    with pytest.raises(ValueError, match="should be one of the rates in its lr_search"):
        chung2014.validate_results(broken)


def test_lr_candidates_are_a_geometric_grid_with_both_ends():
    cfg = chung2014.Chung2014Config(lr_search=4, lr_range=(1e-4, 1e-1))
    assert chung2014.lr_candidates(cfg) == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    assert chung2014.lr_step(cfg) == pytest.approx(10.0)
    default = chung2014.Chung2014Config()
    assert chung2014.lr_candidates(default) == [0.002, 0.004, 0.008, 0.016, 0.032, 0.064]  # rounded to 4 digits
    assert chung2014.lr_candidates(chung2014.Chung2014Config(lr_search=1)) == [0.002]


class _FakeTrainer:
    """Stands in for Trainer in the search: the validation NLL is a parabola in log(lr) with its minimum at TARGET."""

    TARGET = 1e-2

    def __init__(self, model, config):
        self.config, self.epoch = config, 0

    def fit(self, train, valid):
        self.epoch = self.config.epochs
        self.best_loss = 5.0 + (math.log(self.config.lr) - math.log(self.TARGET)) ** 2


@pytest.mark.parametrize("target, extend, grid, best, at_end", [
    (1e-2, 3, [1e-3, 1e-2, 1e-1], 1e-2, False),  # the best inside the grid: nothing added
    (1e-4, 3, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1], 1e-4, False),  # below the grid: it grows until a worse rate is below
    (10.0, 3, [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0], 10.0, False),  # above the grid, likewise
    (1e-9, 2, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1], 1e-5, True),  # far below: the extensions run out, and it says so
    (1e-9, 0, [1e-3, 1e-2, 1e-1], 1e-3, True),
])
def test_the_search_grows_the_grid_past_a_winning_end(monkeypatch, target, extend, grid, best, at_end):
    monkeypatch.setattr(chung2014, "Trainer", _FakeTrainer)
    monkeypatch.setattr(_FakeTrainer, "TARGET", target)
    monkeypatch.setattr(chung2014, "_model", lambda *args: None)
    cfg = chung2014.Chung2014Config(lr_search=3, lr_range=(1e-3, 1e-1), lr_extend=extend, time_limit=None)
    trainers, chosen, runs, end = chung2014._search(cfg, "tanh", 4, 88, 0, {"train": [], "valid": []}, 0.0)
    assert [r["lr"] for r in runs] == pytest.approx(grid)
    assert chosen == pytest.approx(best) and end is at_end


def test_a_winner_at_the_end_of_the_grid_is_a_warning_in_the_results(bl_file):
    config = chung2014.Chung2014Config(models=("tanh",), data_file=bl_file, progress=False,
                                       **{**chung2014.QUICK, "lr_search": 2, "lr_extend": 0, "seeds": 1})
    with pytest.warns(RuntimeWarning, match="tanh seed 0: the best learning rate .* is an end of the grid"):
        results = chung2014.run(config, None, verbose=False)
    assert results["models"]["tanh"]["runs"][0]["lr_at_end_of_grid"] is True
    assert any("an end of the grid" in w for w in results["warnings"])


def test_workers_do_not_change_the_numbers(bl_file):
    # runs in spawned processes: each (model, seed) is seeded on its own, so the results are the same
    runs = [chung2014.run(chung2014.Chung2014Config(models=("tanh", "gru"), data_file=bl_file, progress=False,
                                                    **{**chung2014.QUICK, "workers": w}), verbose=False)
            for w in (1, 2)]
    for cell in ("tanh", "gru"):
        one, two = (r["models"][cell]["runs"] for r in runs)
        assert [(r["lr"], r["test_nll"], r["history"]["valid_loss"]) for r in one] == [
            (r["lr"], r["test_nll"], r["history"]["valid_loss"]) for r in two]


def test_verdicts_call_a_winner_only_beyond_the_spread():
    from rnnkit.experiments import stats

    def model(values):
        runs = [{"test_nll": v} for v in values]
        return {"runs": runs, "test_nll": stats.summarize(values).to_dict()}

    results = {"models": {"tanh": model([9.0, 9.1, 9.2]), "gru": model([8.6, 8.7, 8.8]),
                          "lstm": model([8.7, 9.1, 8.9])}}
    tanh_gru, tanh_lstm, gru_lstm = chung2014.verdicts(results)
    assert tanh_gru.startswith("the GRU is better than the tanh-RNN: lower by 0.400")  # 0.40 > 0.1 + 0.1
    assert "within the spread" in tanh_lstm and "no winner" in tanh_lstm  # 0.20 < 0.1 + 0.2
    assert "within the spread" in gru_lstm
    one = {"models": {"gru": model([8.0]), "lstm": model([9.0])}}
    assert "one seed each" in chung2014.verdicts(one)[0]


def test_summaries_and_the_comparison_rule():
    from rnnkit.experiments import stats

    s = stats.summarize([1.0, 2.0, 3.0])
    assert (s.mean, s.sd, s.min, s.max, s.n) == (2.0, 1.0, 1.0, 3.0, 3) and s.format() == "2.00 ± 1.00"
    assert stats.summarize([4.0]).sd is None and stats.summarize([4.0]).format() == "4.00"
    assert stats.compare(stats.summarize([1.0, 1.2]), stats.summarize([2.0, 2.2])) == -1
    assert stats.compare(stats.summarize([2.0, 2.2]), stats.summarize([1.0, 1.2])) == 1
    assert stats.compare(stats.summarize([1.0, 2.0]), stats.summarize([1.5, 2.5])) == 0
    with pytest.raises(ValueError, match="at least one value"):
        stats.summarize([])
    with pytest.raises(ValueError, match="finite"):
        stats.summarize([1.0, float("nan")])


def test_paper_row_follows_the_data_file_or_the_flag(tmp_path, bl_file):
    import shutil

    notts = tmp_path / "Nottingham.json"
    shutil.copy(bl_file, notts)
    cfg = dict(**{**chung2014.QUICK, "lr_search": 1, "epochs": 1}, models=("tanh",), progress=False)
    results = chung2014.run(chung2014.Chung2014Config(data_file=str(notts), **cfg), None, verbose=False)
    assert results["paper"]["dataset"] == "Nottingham" and tuple(results["paper"]["table2"]["tanh"]) == (3.22, 3.13)
    results = chung2014.run(chung2014.Chung2014Config(data_file=str(notts), paper_dataset="MuseData", **cfg), None,
                            verbose=False)
    assert results["paper"]["dataset"] == "MuseData"
    assert results["dataset"]["paper_dataset_from"] == "paper_dataset (--paper-dataset)"
    anonymous = tmp_path / "data.json"  # no dataset name: the JSB row is a default, and the results say so
    shutil.copy(bl_file, anonymous)
    with pytest.warns(UserWarning, match="names none of Nottingham, JSB, MuseData, Piano-midi"):
        results = chung2014.run(chung2014.Chung2014Config(data_file=str(anonymous), **cfg), None, verbose=False)
    assert results["paper"]["dataset"] == "JSB Chorales"
    assert results["dataset"]["paper_dataset_from"].startswith("default")
    with pytest.raises(ValueError, match="paper_dataset"):
        chung2014.run(chung2014.Chung2014Config(data_file=str(notts), paper_dataset="TIMIT", **cfg), None)


def test_budget_mode_uses_equal_budgets(bl_file, tmp_path):
    cfg = chung2014.Chung2014Config(**{**chung2014.QUICK, "lr_search": 1, "epochs": 1}, data_file=bl_file,
                                    budget=20_000, models=("lstm",), progress=False)
    results = chung2014.run(cfg, None, verbose=False)
    assert results["models"]["lstm"]["units"] == 34 and results["models"]["lstm"]["parameters"] <= 20_000


def test_committed_book_results_are_valid():
    with open(os.path.join(RESULTS, "results.json")) as f:
        results = json.load(f)
    chung2014.validate_results(results)
    assert results["command"].startswith("python -m rnnkit reproduce chung2014")
    assert "--quick" not in results["command"]
    assert set(results["models"]) == {"tanh", "gru", "lstm"}
    for cell, m in results["models"].items():  # the chapter's statistics: at least 3 seeds, no rate at a grid end
        assert len(m["runs"]) >= 3, cell
        assert not any(r["lr_at_end_of_grid"] for r in m["runs"]), cell
    assert os.path.exists(os.path.join(RESULTS, "learning_curves.png"))
    with open(os.path.join(RESULTS, "budget20000", "results.json")) as f:
        budget = json.load(f)
    chung2014.validate_results(budget)
    assert budget["config"]["budget"] == 20_000
    assert all(r["parameters"] <= 20_000 and len(r["runs"]) >= 3 for r in budget["models"].values())
    with open(os.path.join(RESULTS, "tasks.json")) as f:
        tasks.validate_tasks_results(json.load(f))


def test_quick_tasks_run(tmp_path):
    code = main(["tasks", "--quick", "--tasks", "adding,copy", "--cells", "tanh,gru", "--adding-lengths", "5,10",
                 "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "tasks.json").read_text())
    tasks.validate_tasks_results(results)
    rows = results["tasks"]["adding"]["rows"]
    assert [(r["length"], r["cell"]) for r in rows] == [(5, "tanh"), (5, "gru"), (10, "tanh"), (10, "gru")]
    assert all(r["chance"] > 0 and r["score"] >= 0 for r in rows)
    assert results["tasks"]["copy"]["rows"][0]["chance"] == pytest.approx(1 / 8)


def test_bad_data_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": []}))
    code = main(["reproduce", "chung2014", "--quick", "--data-file", str(bad), "--out", str(tmp_path / "o"),
                 "--no-progress"])
    assert code == 2
    assert "rnnkit reproduce: error:" in capsys.readouterr().err


def test_torch_backend_with_the_papers_gru_fails_before_training(bl_file, tmp_path, capsys, monkeypatch):
    # the paper's GRU (reset_after=False) has no torch kernel: say so at once, not after the tanh model has trained
    from rnnkit.experiments import chung2014

    def no_training(*args, **kwargs):
        raise AssertionError("a model was trained before the configuration error")

    monkeypatch.setattr(chung2014, "_run_seed", no_training)
    code = main(["reproduce", "chung2014", "--quick", "--data-file", bl_file, "--backend", "torch",
                 "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "backend 'torch'" in err and "reset_after=False" in err


@pytest.mark.parametrize("flag, value, message", [
    ("--lr-search", "0", "lr_search to be an int >= 1, got 0"),  # was 'min() arg is an empty sequence'
    ("--epochs", "0", "epochs to be an int >= 1, got 0"),
    ("--search-epochs", "-1", "search_epochs to be an int >= 1, got -1"),
    ("--seeds", "0", "seeds to be an int >= 1, got 0"),
    ("--workers", "0", "workers to be an int >= 1, got 0"),
    ("--device", "gpu", "expected device 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', got 'gpu'"),  # was after loading
])
def test_bad_counts_fail_before_loading_or_training(bl_file, tmp_path, capsys, monkeypatch, flag, value, message):
    monkeypatch.setattr(chung2014, "_load", lambda config: pytest.fail("loaded the data before the config check"))
    code = main(["reproduce", "chung2014", "--quick", "--data-file", bl_file, flag, value, "--out", str(tmp_path),
                 "--no-progress"])
    assert code == 2 and message in capsys.readouterr().err


def test_repeated_model_in_the_config_is_an_error(bl_file):
    with pytest.raises(ValueError, match="expected each model once"):
        chung2014.run(chung2014.Chung2014Config(models=("tanh", "tanh"), data_file=bl_file, **chung2014.QUICK))


def test_seed_beyond_64_bits_is_named(bl_file):
    with pytest.raises(ValueError, match="expected seed .. seed . seeds - 1 to be 64-bit ints"):  # was 'Overflow ...'
        chung2014.run(chung2014.Chung2014Config(data_file=bl_file, seed=2**64, **chung2014.QUICK))
    with pytest.raises(ValueError, match="seed=9223372036854775806, seeds=2"):  # the second seed would overflow
        chung2014.run(chung2014.Chung2014Config(data_file=bl_file, **{**chung2014.QUICK, "seed": 2**63 - 2}))


@pytest.mark.parametrize("field, value", [("max_sequences", 0), ("threads", 0)])  # IndexError / torch RuntimeError
def test_bad_optional_counts_in_the_config(bl_file, field, value):
    config = chung2014.Chung2014Config(data_file=bl_file, **{**chung2014.QUICK, field: value})
    with pytest.raises(ValueError, match=f"expected {field} to be None or an int >= 1, got 0"):
        chung2014.run(config)


def test_tasks_budget_below_one_unit_is_an_error(tmp_path, capsys):
    # hidden=1 was used silently, with more parameters than the budget the results claim
    code = main(["tasks", "--quick", "--tasks", "parity", "--cells", "lstm", "--budget", "10", "--out", str(tmp_path)])
    assert code == 2 and "more than the budget 10" in capsys.readouterr().err


def test_gzip_data_file_reproduces_the_plain_one(bl_file, tmp_path):
    import gzip

    packed = tmp_path / "jsb_tiny.json.gz"
    packed.write_bytes(gzip.compress(open(bl_file, "rb").read()))
    runs = [chung2014.run(chung2014.Chung2014Config(models=("tanh",), data_file=str(f), progress=False,
                                                    **chung2014.QUICK), verbose=False) for f in (bl_file, packed)]
    plain, packed = (r["models"]["tanh"]["runs"][0]["history"]["valid_loss"] for r in runs)
    assert plain == packed


@pytest.mark.parametrize("argv", [["reproduce", "chung2014", "--quick", "--models", "tanh", "--no-progress"],
                                  ["tasks", "--quick", "--tasks", "parity", "--cells", "tanh"]])
def test_output_path_that_is_a_file_fails_before_training(bl_file, tmp_path, capsys, monkeypatch, argv):
    # was: all models trained, then os.makedirs raised FileExistsError and the results were lost
    monkeypatch.setattr(chung2014, "_run", lambda *a: pytest.fail("trained before checking --out"))
    monkeypatch.setattr(tasks, "_run", lambda *a: pytest.fail("trained before checking --out"))
    blocker = tmp_path / "results"
    blocker.write_text("")
    data = ["--data-file", bl_file] if argv[0] == "reproduce" else []
    assert main([*argv, *data, "--out", str(blocker)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_no_progress_reaches_the_chorale_parser(tmp_path, monkeypatch):
    # --no-progress was not passed on: a first run printed music21's parsing bar anyway
    from rnnkit import data

    seen = []

    def fake_chorales(**kwargs):
        seen.append(kwargs.get("progress", True))
        raise ValueError("stop here")

    monkeypatch.setattr(data, "load_chorales", fake_chorales)
    assert main(["reproduce", "chung2014", "--quick", "--no-progress", "--out", str(tmp_path)]) == 2
    assert main(["train", "pianoroll", "--no-progress", "--out", str(tmp_path / "m.pt")]) == 2
    assert seen == [False, False]


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "parity,adding", "--adding-lengths", "1"], "adding_lengths >= 2"),  # was after parity had trained
    (["--device", "gpu"], "expected device"),
])
def test_tasks_config_errors_come_before_any_training(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(tasks, "_run", lambda *a: pytest.fail("trained before the config check"))
    assert main(["tasks", "--quick", "--cells", "tanh", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_tasks_config_repeats_and_unknown_tasks():
    with pytest.raises(ValueError, match="each of cells once"):
        tasks.run(tasks.TasksConfig(cells=("gru", "gru"), **tasks.QUICK))
    with pytest.raises(ValueError, match="tasks among 'adding', 'copy', 'parity', got 'sort'"):
        tasks.run(tasks.TasksConfig(tasks=("parity", "sort"), **tasks.QUICK))


def _diverge_above(monkeypatch, threshold):
    from rnnkit.train import Trainer

    step = Trainer._step

    def maybe_diverge(self, batch):
        if self.config.lr > threshold:
            raise FloatingPointError(f"Trainer: the loss became non-finite (lr {self.config.lr})")
        return step(self, batch)

    monkeypatch.setattr(Trainer, "_step", maybe_diverge)


def test_a_diverging_learning_rate_is_recorded_not_fatal(bl_file, monkeypatch):
    config = chung2014.Chung2014Config(models=("tanh",), data_file=bl_file, progress=False,
                                       **{**chung2014.QUICK, "lr_search": 2, "lr_extend": 0, "seeds": 1})
    low, high = chung2014.lr_candidates(config)
    _diverge_above(monkeypatch, (low + high) / 2)  # the larger candidate diverges: the run used to crash
    with pytest.warns(RuntimeWarning, match="an end of the grid"):  # nothing was tried below the low end
        result = chung2014.run(config, None, verbose=False)["models"]["tanh"]["runs"][0]
    assert result["lr"] == low
    assert [r["valid_nll"] is None for r in result["lr_search"]] == [False, True]
    assert "non-finite" in result["lr_search"][1]["diverged"]


def test_every_learning_rate_diverging_is_one_line(bl_file, tmp_path, capsys, monkeypatch):
    _diverge_above(monkeypatch, 0.0)
    code = main(["reproduce", "chung2014", "--quick", "--models", "gru", "--data-file", bl_file, "--out",
                 str(tmp_path), "--no-progress"])
    assert code == 1 and "gru: every learning rate diverged" in capsys.readouterr().err


def test_the_winner_diverging_later_keeps_its_best_epoch(bl_file, monkeypatch):
    from rnnkit.train import Trainer

    step = Trainer._step

    def diverge_after_search(self, batch):
        if self.epoch >= 1:  # QUICK searches 1 epoch; the continuation diverges
            raise FloatingPointError("Trainer: the loss became non-finite")
        return step(self, batch)

    monkeypatch.setattr(Trainer, "_step", diverge_after_search)
    config = chung2014.Chung2014Config(models=("lstm",), data_file=bl_file, progress=False, **chung2014.QUICK)
    with pytest.warns(RuntimeWarning, match="LSTM seed 0: stopped by diverged after 1 epochs"):
        results = chung2014.run(config, None, verbose=False)
    r = results["models"]["lstm"]["runs"][0]
    assert r["stop_reason"] == "diverged" and r["epochs"] == 1 and r["best_epoch"] == 1
    assert "non-finite" in r["diverged"]
    chung2014.validate_results(results)
