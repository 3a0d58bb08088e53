"""Assignment 8 (sequence to sequence with beam search): the searches against exhaustive enumeration, the typical
mistakes caught by both the visible tests and the hidden checks, the trusted judging of the trained model from its
weights (hostile exports get a clear fail, never a crash), the partial-credit curve, the Rules text, and the
sandboxed grading of whole submissions."""
from __future__ import annotations

import re

import grading_cases as gc
import nbformat
import pytest
import torch

from rnnkit.grading import export, judge, specs
from rnnkit.grading.specs import a08_seq2seq as a08

NAME = "08_seq2seq"
ACCURACY = [f"reverse_accuracy_{round(t * 100)}" for t in a08.THRESHOLDS]
CHECKS = ["bi_encoder", "teacher_forcing_loss", "greedy_search", "beam_search", *ACCURACY]
_FUNCTION_OF = {"bi_encoder": "bidirectional_encoder", "teacher_forcing_loss": "teacher_forcing_loss",
                "greedy_search": "greedy_search", "beam_search": "beam_search"}


# ------------------------------------------------------------------------------------------- the references
def _exhaustive(step_fn, eos, max_len, alpha, vocab):
    """The best complete or cut-off sequence by total / len ** alpha, by enumerating every sequence."""
    best = None

    def walk(tokens, state, total):
        nonlocal best
        if tokens and (tokens[-1] == eos or len(tokens) == max_len):
            score = total / len(tokens) ** alpha
            if best is None or score > best[1]:
                best = (tokens, score)
            return
        log_probs, state = step_fn(tokens[-1] if tokens else a08.BOS, state)
        for v in range(vocab):
            if log_probs[v] > -30:
                walk(tokens + [v], state, total + float(log_probs[v]))

    walk([], None, 0.0)
    return best


def test_a_wide_beam_finds_the_exhaustive_best_and_the_cases_tell_the_recipes_apart():
    cases = specs.get("beam_search").make_cases()
    for case in cases:
        lm, state, bos, eos, _, max_len, alpha = case.args
        tokens, score = a08._beam(lm, state, bos, eos, 10_000, max_len, alpha)
        best = _exhaustive(lm, eos, max_len, alpha, lm.vocab)
        assert tokens == best[0] and score == pytest.approx(best[1]), case.label
    labels = {c.label: a08._beam(*c.args)[0] for c in cases}
    greedy = {c.label: a08._greedy(*c.args[:4], c.args[5])[0] for c in cases}
    assert sum(labels[k] != greedy[k] for k in labels) >= 3, "greedy and beam must disagree on several cases"


def test_make_data_reverses_and_pads_with_eos():
    src, lengths, tgt, tgt_lengths = a08.make_data(50, torch.Generator().manual_seed(0))
    assert src.shape == (a08.MAX_LEN, 50) and tgt.shape == (a08.MAX_LEN + 1, 50)
    for b in range(50):
        n = int(lengths[b])
        assert a08.MIN_LEN <= n <= a08.MAX_LEN and int(tgt_lengths[b]) == n + 1
        assert tgt[:n, b].tolist() == src[:n, b].flip(0).tolist() and int(tgt[n, b]) == a08.EOS
        assert (src[n:, b] == a08.EOS).all() and (tgt[n:, b] == a08.EOS).all() and (src[:n, b] >= 2).all()


# ---------------------------------------------------------------- the typical mistakes: visible and hidden tests
def _carry() -> tuple[str, str]:
    """The beam cell rewritten so that finished hypotheses stay in the beam, carried unextended, taking a slot."""
    source = gc.find(gc.source_notebook(NAME)[1], "beam").source
    loop = "        for total, tokens, st in beam:\n"
    select = ("            (finished if cand[1][-1] == eos else beam).append(cand)"
              "  # finished hypotheses leave the beam\n"
              "        if not beam:\n            break\n    finished += beam  # cut off at max_len\n")
    assert loop in source and select in source
    return source, source.replace(loop, loop + "            if tokens[-1:] == [eos]:\n"
                                  "                candidates.append((total, tokens, st))\n                continue\n"
                                  ).replace(select, "            beam.append(cand)\n    finished = beam\n")


MISTAKES = [
    # (name, solution cell, test cell, replace, visible message, hidden check that must fail)
    ("reversed pass over the flipped padded batch", "bi_encoder", "test_bi_encoder",
     ("    out_b, h_b = run(bwd, reversed(range(steps)))\n",
      "    x = x.flip(0)\n    out_b, h_b = run(bwd, range(steps))\n    out_b = out_b.flip(0)\n"),
     "LAST VALID step", "bi_encoder"),
    ("halves swapped", "bi_encoder", "test_bi_encoder",
     ("return torch.cat([out_f, out_b], dim=-1), torch.cat([h_f, h_b], dim=-1)",
      "return torch.cat([out_b, out_f], dim=-1), torch.cat([h_b, h_f], dim=-1)"), "swapped", "bi_encoder"),
    ("decoder fed its own predictions", "loss", "test_loss",
     ("        token = tgt[t]  # the true token, whatever the model predicted", "        token = logits.argmax(-1)"),
     "feed the TRUE previous token", "teacher_forcing_loss"),
    ("loss averaged over padding", "loss", "test_loss",
     ("    return (torch.stack(losses) * mask).sum() / mask.sum()", "    return torch.stack(losses).mean()"),
     "padding included", "teacher_forcing_loss"),
    ("EOS step left out of the loss", "loss", "test_loss",
     ("< tgt_lengths.to(tgt.device)  # (T', B)", "< tgt_lengths.to(tgt.device) - 1"),
     "the EOS step is not counted", "teacher_forcing_loss"),
    ("greedy that does not stop at EOS", "greedy", "test_greedy",
     ("        if token == eos:\n            break\n", ""), "then EOS (0.4)", "greedy_search"),
    ("beam that extends finished hypotheses", "beam", "test_beam",
     ("            (finished if cand[1][-1] == eos else beam).append(cand)  # finished hypotheses leave the beam",
      "            beam.append(cand)"), "never extend a hypothesis after EOS", "beam_search"),
    ("beam that keeps finished hypotheses in their slots", "beam", "test_beam", _carry(),
     "a finished hypothesis ('EOS' alone, step 1) must LEAVE the beam", "beam_search"),
    ("beam without length normalisation", "beam", "test_beam",
     ("    best = max(finished, key=lambda c: c[0] / len(c[1]) ** alpha)",
      "    best = max(finished, key=lambda c: c[0])"),
     "divide each set-aside hypothesis's total by len(tokens) ** alpha", "beam_search"),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_visible_tests_name_the_mistake(mistake):
    _, solution_id, grade_id, replace, message, _ = mistake
    assert message in gc.run_visible(NAME, grade_id, solution_id, replace)


def test_visible_tests_pass_on_the_solution():
    for grade_id in ("test_bi_encoder", "test_loss", "test_greedy", "test_beam"):
        assert gc.run_visible(NAME, grade_id, "setup", ("", "")) == ""


def _runs(md: dict) -> bool:
    """The cells ``_functions`` runs, by their nbgrader metadata."""
    return not md.get("grade") and md.get("grade_id") not in ("train", "decode", "model")


def _functions(solution_id: str, replace: tuple[str, str]) -> dict:
    """The notebook's setup, given and answer cells run in-process (no tests, no training), one cell's text
    replaced."""
    return gc.answer_functions(NAME, solution_id, replace, _runs)


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_hidden_checks_fail_the_mistake(mistake):
    _, solution_id, _, replace, _, check = mistake
    verdict = gc.verdict(check, _functions(solution_id, replace)[_FUNCTION_OF[check]])
    assert not verdict.passed, verdict.message


def test_the_solution_passes_every_function_check_and_the_notebook_model_is_the_judges():
    functions = _functions("setup", ("", ""))
    for check, fn in _FUNCTION_OF.items():
        verdict = gc.verdict(check, functions[fn])
        assert verdict.passed, verdict.message
    for got, want in zip(functions["make_data"](30, torch.Generator().manual_seed(3)),
                         a08.make_data(30, torch.Generator().manual_seed(3)), strict=True):
        assert torch.equal(got, want)
    torch.manual_seed(0)
    mine = functions["Seq2Seq"](embed=5, hidden=6)
    torch.manual_seed(0)
    reference = a08.Reference(embed=5, hidden=6)
    assert {k: v.shape for k, v in mine.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert all(torch.equal(mine.state_dict()[k], v) for k, v in reference.state_dict().items()), "same initialisation"
    data = a08.make_data(5, torch.Generator().manual_seed(4))
    assert torch.allclose(functions["teacher_forcing_loss"](mine, *data), a08._teacher_forcing_loss(reference, *data))


# ------------------------------------------------------------------------------ the trained model, judged by weights
def _verdicts(weights) -> list:
    return [judge.compare(name, export.collect(specs.get(name), weights)) for name in ACCURACY]


def test_the_reference_weights_pass_every_threshold_and_an_untrained_model_none():
    assert all(v.passed for v in _verdicts(a08._reference_weights()))
    torch.manual_seed(0)
    untrained = _verdicts(dict(a08.Reference().state_dict()))
    assert not any(v.passed for v in untrained)
    assert re.search(r"exact-match accuracy 0\.\d{3} on 1000 held-out strings \(decoded greedily by the grader from "
                     r"your weights\) is below 0\.4", untrained[0].message), untrained[0].message


def test_the_curve_gives_half_points_in_order_of_accuracy():
    """Noise added to the trained weights lowers the accuracy step by step: each model passes exactly the thresholds
    at or below its own accuracy, and some model passes only some of them (partial credit)."""
    patterns = []
    for noise in (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.6):
        g = torch.Generator().manual_seed(7)
        weights = {k: v + noise * torch.randn(v.shape, generator=g) for k, v in a08._reference_weights().items()}
        value, why = a08.judged_accuracy({k: v.numpy() for k, v in weights.items()})
        passed = [v.passed for v in _verdicts(weights)]
        assert why is None and passed == [value >= t for t in a08.THRESHOLDS], (noise, value, passed)
        patterns.append(sum(passed))
    assert patterns[0] == 4 and patterns[-1] == 0 and any(0 < p < 4 for p in patterns), patterns


HOSTILE = [
    ("NaN", lambda w: {**w, "out.bias": w["out.bias"] * float("nan")}, "contains NaN or inf"),
    ("inf", lambda w: {**w, "dec.1": w["dec.1"] + float("inf")}, "contains NaN or inf"),
    ("transposed", lambda w: {**w, "out.weight": w["out.weight"].T.contiguous()},
     "has shape (64, 12), expected (12, 64)"),
    ("missing key", lambda w: {k: v for k, v in w.items() if k != "enc_bwd.2"}, "'enc_bwd.2' is missing"),
    ("extra key", lambda w: {**w, "attention.weight": torch.zeros(3, 3)}, "is not a weight of the notebook's Seq2Seq"),
    ("integer weights", lambda w: {**w, "out.bias": w["out.bias"].long()}, "has dtype torch.int64"),
    ("wrong vocabulary", lambda w: {**w, "tgt_embed.weight": torch.zeros(13, 16)}, "'tgt_embed.weight' has shape"),
    ("too large", lambda w: {"src_embed.weight": torch.zeros(12, 4), "enc_fwd.1": torch.zeros(3 * 300, 300)},
     "larger than the grader evaluates"),
    ("a tensor", lambda w: torch.zeros(3), "should be the model's state_dict"),
    ("a list", lambda w: [w], "should be the model's state_dict"),
    ("strings", lambda w: {**w, "out.bias": "0.9"}, "should be a tensor"),
    ("nothing", lambda w: None, "should be the model's state_dict"),
    ("the held-out strings themselves", lambda w: {"src": a08.held_out()[0], "tgt": a08.held_out()[2]},
     "has dtype torch.int64"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_exports_get_a_clear_fail_not_a_crash(case):
    _, mutate, words = case
    for verdict in _verdicts(mutate(dict(a08._reference_weights()))):
        assert not verdict.passed and words in verdict.message, verdict.message
        assert verdict.message.startswith("reverse_accuracy_") and "grader error" not in verdict.message


# ------------------------------------------------------------------------------------------------ the Rules text
def test_every_check_has_a_rule_stated_in_the_notebook():
    intro = gc.source_notebook(NAME)[1].cells[0].source
    for check in CHECKS:
        rule = specs.get(check).rule
        assert rule is not None and rule.why in intro, check
    for check in ("bi_encoder", "teacher_forcing_loss", ACCURACY[0]):
        rule = specs.get(check).rule
        assert rule.forbids("torch.nn.GRU") and rule.forbids("torch.nn.GRUCell")
        assert rule.forbids("rnnkit.cells.gru_cell")
    assert not specs.get("teacher_forcing_loss").rule.forbids("torch.nn.functional.cross_entropy")
    assert specs.get("beam_search").rule.forbids("rnnkit.decoding.beam_search")


# ---------------------------------------------------------------------- whole submissions through `make autograde`
def _replace_model(nb, code: str):
    """A submission that trains as usual, then replaces `model` just before the graded test cell."""
    nb.cells.insert(gc.index_of(nb, "test_model"), nbformat.v4.new_code_cell(code))
    return nb


_FAKE = ("class _Fake(Seq2Seq):\n    def state_dict(self, *a, **k):\n"
         "        return {k: {mutation} for k, v in super().state_dict().items()}\n"
         "_w = model.state_dict()\nmodel = _Fake()\nmodel.load_state_dict(_w)")


@pytest.mark.slow
def test_sandboxed_grading_of_correct_blank_and_hostile_submissions():
    gc.need_sandbox()
    submissions = {
        "correct": (gc.correct_notebook(NAME), 10.0, [f"PASS {ACCURACY[-1]}", "PASS beam_search"]),
        "blank": (nbformat.read(str(gc.REPO / "exercises" / NAME / f"{NAME}.ipynb"), as_version=4), 0.0, []),
        "nan_weights": (_replace_model(gc.correct_notebook(NAME), _FAKE.replace("{mutation}", "v * float('nan')")),
                        8.0, ["contains NaN or inf"]),
        "wrong_shapes": (_replace_model(gc.correct_notebook(NAME), _FAKE.replace("{mutation}", "v.T.contiguous()")),
                         8.0, ["has shape"]),
    }
    seconds = gc.grade_batch(NAME, submissions, jobs=2)
    assert all(s < 240 for s in seconds.values()), seconds
