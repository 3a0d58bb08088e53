"""Assignment 6 (a character language model): the names corpus, the typical mistakes caught by both the visible tests
and the hidden checks, the trusted judging of the trained model from its weights (hostile exports get a clear fail,
never a crash), the partial-credit curve, the Rules text, and the sandboxed grading of whole submissions."""
from __future__ import annotations

import json
import re

import grading_cases as gc
import nbformat
import pytest
import torch

from rnnkit.data.names import NAMES_FILE, load_names
from rnnkit.grading import export, judge, specs
from rnnkit.grading.specs import a06_char_lm as a06

NAME = "06_char_lm"
CHECKS = ["build_vocab", "encode_names", "decode_ids", "tbptt_batches", "train_epoch", "perplexity", "sample_name",
          *(f"names_perplexity_{t:g}" for t in a06.THRESHOLDS)]


# ----------------------------------------------------------------------------------------------- the names corpus
def test_names_are_split_disjointly_and_deterministically_with_their_source():
    train, valid, test = load_names("train"), load_names("valid"), load_names("test")
    assert not (set(train) & set(valid) or set(train) & set(test) or set(valid) & set(test))
    assert sorted(train + valid + test) == sorted(load_names("all")) and len(load_names("all")) == 5163
    assert 0.75 < len(train) / 5163 < 0.85 and all(re.fullmatch("[a-z]{2,11}", n) for n in load_names("all"))
    assert train != sorted(train), "the names come shuffled (alphabetical order lets a stream model copy prefixes)"
    data = json.loads(NAMES_FILE.read_text())
    assert "Census" in data["source"] and "public domain" in data["licence"]
    with pytest.raises(ValueError, match="expected split to be one of"):
        load_names("training")


# ---------------------------------------------------------------- the typical mistakes: visible and hidden tests
MISTAKES = [
    # (name, solution cell, test cell, replace, visible message, hidden check that must fail)
    ("encode without the leading EOS", "vocab_code", "test_vocab", ("    ids = [0]\n", "    ids = []\n"),
     "start with EOS", "encode_names"),
    ("chunks cut before rows", "tbptt_code", "test_tbptt",
     ("    x = stream[: rows * batch_size].view(batch_size, rows).T  # (rows, B): column b is a contiguous piece\n"
      "    y = stream[1 : rows * batch_size + 1].view(batch_size, rows).T  # (rows, B): the next tokens\n",
      "    x = stream[: rows * batch_size].view(rows, batch_size)\n"
      "    y = stream[1 : rows * batch_size + 1].view(rows, batch_size)\n"),
     "cut the stream into batch_size rows FIRST", "tbptt_batches"),
    ("no detach between chunks", "train_code", "test_train",
     ("    state = detach_state(state)  # keep the values, cut the graph: "
      "backprop stops at this chunk's first step\n", ""),
     "detach the state at the start of every train_step", "train_epoch"),
    ("clipping per tensor", "train_code", "test_train",
     ("    for p, g in zip(params, clip_grad_norm([p.grad for p in params], max_norm)):\n        p.grad = g\n",
      "    for p in params:\n        p.grad = clip_grad_norm([p.grad], max_norm)[0]\n"),
     "clip by ONE norm over all gradients together", "train_epoch"),
    ("perplexity in base 2", "perplexity_code", "test_perplexity",
     ("    return math.exp(total / count)", "    return 2 ** (total / count)"), "use natural logarithms", "perplexity"),
    ("perplexity as the mean of the chunks' means", "perplexity_code", "test_perplexity",
     ("            total -= float(log_probs.gather(-1, y.unsqueeze(-1)).sum())\n            count += y.numel()\n",
      "            total -= float(log_probs.gather(-1, y.unsqueeze(-1)).mean())\n            count += 1\n"),
     "not the mean of the chunks' means", "perplexity"),
    ("perplexity resetting the state every chunk", "perplexity_code", "test_perplexity",
     ("            logits, state = model(x, state)  # (T, B, V): the state runs on from chunk to chunk\n",
      "            logits, _ = model(x, None)\n"), "carry the state from chunk to chunk", "perplexity"),
    ("sampling that ignores the generator", "sample_code", "test_sample",
     ("sample_until_eos(step_fn, None, 0, 0, max_len, temperature, generator)",
      "sample_until_eos(step_fn, None, 0, 0, max_len, temperature, None)"),
     "draw with torch.multinomial(probs, 1, generator=generator)", "sample_name"),
    ("sampling that never stops at EOS", "sample_code", "test_sample",
     ("sample_until_eos(step_fn, None, 0, 0, max_len, temperature, generator)",
      "sample_until_eos(step_fn, None, 0, -1, max_len, temperature, generator)"),
     "stop as soon as EOS is drawn", "sample_name"),
    ("sampling without temperature", "own_code", "test_sample",
     ("probs = torch.softmax(logits / temperature, dim=-1)", "probs = torch.softmax(logits, dim=-1)"),
     "divide the logits by the temperature", "sample_name"),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_visible_tests_name_the_mistake(mistake):
    _, solution_id, grade_id, replace, message, _ = mistake
    assert message in gc.run_visible(NAME, grade_id, solution_id, replace)


def test_visible_tests_pass_on_the_solution():
    for grade_id in ("test_vocab", "test_tbptt", "test_train", "test_perplexity", "test_sample"):
        assert gc.run_visible(NAME, grade_id, "vocab_code", ("", "")) == ""


def _runs(md: dict) -> bool:
    """The cells ``_functions`` runs, by their nbgrader metadata."""
    return (md.get("solution") or md.get("grade_id") == "setup") and md.get("grade_id") != "model"


def _functions(solution_id: str, replace: tuple[str, str]) -> dict:
    """The notebook's setup and answer cells run in-process (no tests, no training), one line replaced."""
    return gc.answer_functions(NAME, solution_id, replace, _runs)


_FUNCTION_OF = {"build_vocab": "build_vocab", "encode_names": "encode", "decode_ids": "decode",
                "tbptt_batches": "tbptt_batches", "train_epoch": "train_epoch", "perplexity": "perplexity",
                "sample_name": "sample_name"}


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_hidden_checks_fail_the_mistake(mistake):
    _, solution_id, _, replace, _, check = mistake
    fn = _functions(solution_id, replace)[_FUNCTION_OF[check]]
    verdict = judge.compare(check, export.collect(specs.get(check), fn))
    assert not verdict.passed, verdict.message


def test_the_solution_passes_every_function_check():
    functions = _functions("vocab_code", ("", ""))
    for check, fn in _FUNCTION_OF.items():
        verdict = judge.compare(check, export.collect(specs.get(check), functions[fn]))
        assert verdict.passed, verdict.message


def test_no_detach_is_reported_as_the_students_own_error():
    fn = _functions("train_code", MISTAKES[2][3])["train_epoch"]
    message = judge.compare("train_epoch", export.collect(specs.get("train_epoch"), fn)).message
    assert "your function raised RuntimeError: Trying to backward through the graph a second time" in message


# ------------------------------------------------------------------------------ the trained model, judged by weights
def _weights() -> dict[str, torch.Tensor]:
    return a06._reference_weights()


def _verdicts(weights) -> list:
    return [judge.compare(f"names_perplexity_{t:g}", export.collect(specs.get(f"names_perplexity_{t:g}"), weights))
            for t in a06.THRESHOLDS]


def test_the_reference_weights_pass_every_threshold_and_an_untrained_model_none():
    assert all(v.passed for v in _verdicts(_weights()))
    from rnnkit.models import CharLM

    torch.manual_seed(0)
    untrained = _verdicts(dict(CharLM(27, 32, embedding_dim=8, cell="gru").state_dict()))
    assert not any(v.passed for v in untrained)
    assert re.search(r"perplexity 2\d\.\d{3} of the test names \(computed by the grader from your weights\) is above 8",
                     untrained[0].message), untrained[0].message


def test_the_curve_gives_half_points_in_order_of_perplexity():
    """Flattening the output layer raises the perplexity step by step: each model passes exactly the thresholds at
    or above its own perplexity, and some model passes only some of them (partial credit)."""
    patterns = []
    for scale in (1.0, 0.7, 0.55, 0.45, 0.35, 0.2):
        weights = {k: v.clone() for k, v in _weights().items()}
        weights["out.weight"] *= scale
        weights["out.bias"] *= scale
        value, why = a06.judged_perplexity({k: v.numpy() for k, v in weights.items()})
        passed = [v.passed for v in _verdicts(weights)]
        assert why is None and passed == [value <= t for t in a06.THRESHOLDS], (scale, value, passed)
        patterns.append(sum(passed))
    assert patterns[0] == 4 and patterns[-1] == 0 and any(0 < p < 4 for p in patterns), patterns


def _hostile(mutate) -> dict:
    weights = {k: v.clone() for k, v in _weights().items()}
    return mutate(weights)


HOSTILE = [
    ("NaN", lambda w: {**w, "out.bias": w["out.bias"] * float("nan")}, "contains NaN or inf"),
    ("inf", lambda w: {**w, "rnn.weight_hh_l0": w["rnn.weight_hh_l0"] + float("inf")}, "contains NaN or inf"),
    ("transposed", lambda w: {**w, "out.weight": w["out.weight"].T.contiguous()},
     "has shape (48, 27), expected (27, 48)"),
    ("missing key", lambda w: {k: v for k, v in w.items() if k != "out.bias"}, "'out.bias' is missing"),
    ("extra key", lambda w: {**w, "rnn.weight_hr_l0": torch.zeros(3, 3)}, "is not a weight of rnnkit.CharLM"),
    ("integer weights", lambda w: {**w, "out.bias": w["out.bias"].long()}, "has dtype torch.int64"),
    ("wrong vocabulary", lambda w: {**w, "embed.weight": torch.zeros(30, 16)}, "has 30 rows"),
    ("not a layer", lambda w: {**w, "rnn.weight_hh_l0": torch.zeros(100, 48)}, "not an RNN, GRU or LSTM layer"),
    ("too large", lambda w: {"embed.weight": torch.zeros(27, 4), "rnn.weight_hh_l0": torch.zeros(3 * 520, 520)},
     "larger than the grader evaluates"),
    ("a tensor", lambda w: torch.zeros(3), "should be the model's state_dict"),
    ("an OrderedDict", lambda w: __import__("collections").OrderedDict(w), "should be the model's state_dict"),
    ("a list", lambda w: [w], "should be the model's state_dict"),
    ("strings", lambda w: {**w, "out.bias": "7.0"}, "should be a tensor"),
    ("odd keys", lambda w: {"a,b:{c": torch.zeros(2), **w}, "state_dict entry"),
    ("nothing", lambda w: None, "should be the model's state_dict"),
    ("the test names themselves", lambda w: {"test_stream": a06._test_data()[1], "vocab": torch.zeros(27)},
     "has dtype torch.int64"),
    ("the test names as floats", lambda w: {"test_stream": a06._test_data()[1].double()},
     "not those of rnnkit.CharLM"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_exports_get_a_clear_fail_not_a_crash(case):
    _, mutate, words = case
    for verdict in _verdicts(_hostile(mutate)):
        assert not verdict.passed and words in verdict.message, verdict.message
        assert verdict.message.startswith("names_perplexity_") and "grader error" not in verdict.message


def test_a_hand_written_export_file_is_judged_like_any_other(tmp_path):
    """The sandbox's export is student-controlled bytes: a hand-made .npz with NaN weights fails with the reason."""
    exported = export.collect(specs.get("names_perplexity_8"), _hostile(HOSTILE[0][1]))
    export.save(exported, tmp_path / "x.npz")
    verdict = judge.compare("names_perplexity_8", export.load(tmp_path / "x.npz"))
    assert not verdict.passed and "contains NaN or inf" in verdict.message


# ------------------------------------------------------------------------------------------------ the Rules text
def test_every_check_has_a_rule_stated_in_the_notebook():
    intro = gc.source_notebook(NAME)[1].cells[0].source
    for check in CHECKS:
        rule = specs.get(check).rule
        assert rule is not None, check
        assert rule.why in intro, f"{check}: its rule is not in the Rules paragraph"
    assert specs.get("train_epoch").rule.forbids("torch.nn.utils.clip_grad_norm_")
    assert specs.get("perplexity").rule.forbids("torch.nn.functional.cross_entropy")
    assert not specs.get("train_epoch").rule.forbids("torch.nn.functional.cross_entropy")
    assert not specs.get("names_perplexity_8").rule.forbids("rnnkit.CharLM")


# ---------------------------------------------------------------------- whole submissions through `make autograde`
def _replace_model(nb, code: str):
    """A submission that trains as usual, then replaces `model` just before the graded test cell."""
    nb.cells.insert(gc.index_of(nb, "test_model"), nbformat.v4.new_code_cell(code))
    return nb


@pytest.mark.slow
def test_sandboxed_grading_of_correct_blank_and_hostile_submissions():
    gc.need_sandbox()
    submissions = {
        "correct": (gc.correct_notebook(NAME), 10.0, ["PASS names_perplexity_8"]),
        "blank": (nbformat.read(str(gc.REPO / "exercises" / NAME / f"{NAME}.ipynb"), as_version=4), 0.0, []),
        "nan_weights": (_replace_model(gc.correct_notebook(NAME), (
            "class _Fake(rnnkit.CharLM):\n    def state_dict(self, *a, **k):\n"
            "        return {k: v * float('nan') for k, v in super().state_dict().items()}\n"
            "_w = model.state_dict()\nmodel = _Fake(len(vocab), 64, embedding_dim=16)\nmodel.load_state_dict(_w)")),
            8.0, ["contains NaN or inf"]),
        "wrong_shapes": (_replace_model(gc.correct_notebook(NAME), (
            "class _Fake(rnnkit.CharLM):\n    def state_dict(self, *a, **k):\n"
            "        return {k: v.T.contiguous() for k, v in super().state_dict().items()}\n"
            "_w = model.state_dict()\nmodel = _Fake(len(vocab), 64, embedding_dim=16)\nmodel.load_state_dict(_w)")),
            8.0, ["embed.weight has 16 rows, but the vocabulary of the training names has 27 symbols"]),
    }
    seconds = gc.grade_batch(NAME, submissions, jobs=2)
    assert all(s < 240 for s in seconds.values()), seconds


# ----------------------------------------------------------------- correct answers written differently keep their marks
def _vocab_differently(names):
    chars = []
    for name in names:
        chars.extend(c for c in name if c not in chars)
    return ["\n", *sorted(chars)]


def _encode_differently(names, vocab):
    text = "\n" + "".join(name + "\n" for name in names)
    return torch.tensor([vocab.index(c) for c in text]).long()


def _decode_differently(ids, vocab):
    return "".join(map(vocab.__getitem__, torch.as_tensor(ids, dtype=torch.long).tolist()))


def _tbptt_differently(stream, batch_size, num_steps):
    rows = (stream.numel() - 1) // batch_size
    pairs = torch.stack([stream[:-1][: rows * batch_size], stream[1:][: rows * batch_size]])  # (2, rows * B)
    grid = pairs.reshape(2, batch_size, rows).permute(0, 2, 1)  # (2, rows, B)
    return [tuple(grid[:, t : t + num_steps].unbind(0)) for t in range(0, rows, num_steps)]


def _train_differently(model, optimizer, batches, max_norm):
    losses, state = [], None
    for x, y in batches:
        if state is not None:
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        optimizer.zero_grad(set_to_none=True)
        logits, state = model(x, state)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for g in grads:
            g.mul_(factor)
        optimizer.step()
        losses.append(loss.item())
    return losses


def _perplexity_differently(model, batches):
    nll, n, state = [], 0, None
    with torch.no_grad():
        for x, y in batches:
            logits, state = model(x, state)
            nll.append(-torch.log_softmax(logits, -1).gather(2, y[..., None]).squeeze(2).reshape(-1))
            n += y.numel()
    return float(torch.exp(torch.cat(nll).sum() / n))


def _sample_differently(model, temperature, generator, max_len=20):
    out, state, last = [], None, torch.zeros(1, 1, dtype=torch.long)
    with torch.no_grad():
        while len(out) < max_len:
            logits, state = model(last, state)
            probs = (logits[-1, 0] / temperature).softmax(-1)
            last = torch.multinomial(probs, num_samples=1, generator=generator)[None]
            out.append(last.item())
            if out[-1] == 0:
                return out
    return out


@pytest.mark.parametrize("check, fn", [
    ("build_vocab", _vocab_differently), ("encode_names", _encode_differently), ("decode_ids", _decode_differently),
    ("tbptt_batches", _tbptt_differently), ("train_epoch", _train_differently),
    ("perplexity", _perplexity_differently), ("sample_name", _sample_differently)])
def test_a_correct_answer_written_differently_passes(check, fn):
    verdict = judge.compare(check, export.collect(specs.get(check), fn))
    assert verdict.passed, verdict.message
