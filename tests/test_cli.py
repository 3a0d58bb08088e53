"""python -m rnnkit: every subcommand has --help, bad arguments exit with status 2, train -> sample round trip."""

import subprocess
import sys

import pytest

from rnnkit.__main__ import build_parser, main


@pytest.mark.parametrize("argv, expect", [
    ([], ["reproduce", "tasks", "train", "sample"]),
    (["reproduce"], ["--data-file", "--models", "--epochs", "--lr-search", "--seed", "--out", "--device", "--quick"]),
    (["tasks"], ["--tasks", "--cells", "--adding-lengths", "--copy-delays", "--parity-lengths", "--quick"]),
    (["train"], ["charlm", "pianoroll", "--checkpoint", "--resume", "--weight-noise"]),
    (["sample"], ["--temperature", "--top-k", "--seed"]),
])
def test_help_for_each_subcommand(argv, expect, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in expect:
        assert option in text


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "rnnkit", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "reproduce" in out.stdout


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "chung2014", "--models", "tanh,elman"], "comma-separated subset of tanh,gru,lstm"),
    (["reproduce", "hochreiter1997"], "invalid choice"),
    (["tasks", "--tasks", "sorting"], "comma-separated subset of adding,copy,parity"),
    (["tasks", "--adding-lengths", "10,x"], "comma-separated positive integers"),
    (["frobnicate"], "invalid choice"),
    (["reproduce", "chung2014", "--models", "tanh,gru,tanh"], "expected each name once, got tanh"),
    (["tasks", "--cells", "gru,gru"], "expected each name once, got gru"),
    (["reproduce", "chung2014", "--time-limit", "-5"], "expected seconds >= 0 (0: no limit)"),  # was: no limit
    (["tasks", "--seed", str(10**23)], "expected a seed in -2**63 .. 2**63 - 2"),  # was 'Overflow when unpacking'
    (["sample", "m.pt", "--seed", "1.5"], "expected an integer seed, got '1.5'"),
])
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_train_then_sample_charlm(tmp_path, capsys):
    model = tmp_path / "lm.pt"
    assert main(["train", "charlm", "--out", str(model), "--hidden", "16", "--epochs", "1", "--max-chars", "3000",
                 "--max-len", "40", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sample", str(model), "--max-len", "30", "--seed", "1", "--num", "2"]) == 0
    first = capsys.readouterr().out
    assert main(["sample", str(model), "--max-len", "30", "--seed", "1", "--num", "2"]) == 0
    assert capsys.readouterr().out == first  # seeded: the same text
    assert first.count("---") == 2


def test_sample_rejects_a_foreign_file(tmp_path):
    import torch

    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(SystemExit, match="not a model saved by `rnnkit train`"):
        main(["sample", str(path)])


def test_train_then_sample_pianoroll(tmp_path, capsys):
    import json

    data = tmp_path / "tiny.json"
    seq = [[60, 64], [62], [], [65, 69, 72]] * 2
    data.write_text(json.dumps({"train": [seq] * 4, "valid": [seq], "test": [seq]}))
    model = tmp_path / "roll.pt"
    assert main(["train", "pianoroll", "--data-file", str(data), "--out", str(model), "--hidden", "8",
                 "--epochs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sample", str(model), "--max-len", "6", "--seed", "2"]) == 0
    (frames,) = json.loads(capsys.readouterr().out)
    assert len(frames) == 6 and all(21 <= p <= 108 for frame in frames for p in frame)


def _tiny_bl(tmp_path):
    import json

    data = tmp_path / "tiny.json"
    seq = [[60, 64], [62], [], [65, 69, 72]] * 2
    data.write_text(json.dumps({"train": [seq] * 4, "valid": [seq], "test": [seq]}))
    return str(data)


@pytest.mark.parametrize("extra, message", [
    (["--resume"], "--resume needs --checkpoint"),  # was silently a fresh start
    (["--max-len", "5"], "--max-len applies to `rnnkit train charlm`, not pianoroll"),  # was ignored
    (["--checkpoint", "SAME"], "--checkpoint and --out must be different files"),
    (["--device", "gpu"], "expected device 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', got 'gpu'"),  # was a traceback
])
def test_train_rejects_ignored_or_conflicting_flags(tmp_path, capsys, extra, message):
    out = str(tmp_path / "m.pt")
    extra = [out if a == "SAME" else a for a in extra]
    assert main(["train", "pianoroll", "--data-file", _tiny_bl(tmp_path), "--out", out, "--hidden", "4",
                 "--epochs", "1", "--no-progress", *extra]) == 2
    assert message in capsys.readouterr().err


def test_train_charlm_rejects_data_file(tmp_path, capsys):
    assert main(["train", "charlm", "--data-file", "x.pickle", "--out", str(tmp_path / "m.pt")]) == 2
    assert "--data-file applies to `rnnkit train pianoroll`, not charlm" in capsys.readouterr().err


def test_train_creates_the_output_folder_and_clip_norm_0_is_off(tmp_path, capsys):
    import torch

    out = tmp_path / "new" / "dir" / "m.pt"  # was a RuntimeError from torch.save after all the training
    assert main(["train", "pianoroll", "--data-file", _tiny_bl(tmp_path), "--out", str(out), "--hidden", "4",
                 "--epochs", "1", "--no-progress", "--clip-norm", "0"]) == 0
    assert torch.load(out, weights_only=True)["config"]["clip_norm"] is None


def test_sample_rejects_charlm_flags_for_a_pianoroll_model_and_unreadable_files(tmp_path, capsys):
    model = tmp_path / "roll.pt"
    assert main(["train", "pianoroll", "--data-file", _tiny_bl(tmp_path), "--out", str(model), "--hidden", "4",
                 "--epochs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    for flag in (["--top-k", "3"], ["--prompt", "ab"]):  # were silently ignored
        assert main(["sample", str(model), *flag]) == 2
        assert "apply to charlm models" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    for path in (junk, tmp_path):  # were RuntimeError / IsADirectoryError tracebacks
        assert main(["sample", str(path)]) == 2
        assert "rnnkit sample: error:" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["reproduce", "tasks", "train", "sample"])
def test_every_option_has_help_text(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    missing = [a.option_strings or a.dest for a in sub._actions if not a.help]
    assert not missing, f"`rnnkit {command} --help` says nothing about {missing}"


def test_train_charlm_with_too_few_characters_names_the_flag(tmp_path, capsys):
    assert main(["train", "charlm", "--max-chars", "10", "--out", str(tmp_path / "m.pt"), "--no-progress"]) == 2
    assert "--max-chars 10 leaves 1 document" in capsys.readouterr().err
