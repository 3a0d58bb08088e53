"""The trusted judge: compare a student's export (:mod:`rnnkit.grading.export`) with the expected values computed
live from ``rnnkit`` in this process and with the stored fixtures, checking exact type, structure, shape, dtype,
then values within the spec's tolerance.

``compare(name, exported) -> Verdict(passed, message)`` is pure: it never runs student code and reads only plain
arrays, so it works the same on data built in a kernel and on an ``.npz`` loaded with ``allow_pickle=False``.
Messages are generated here and are safe to show students: they name the case, the output and the kind of
difference (shape, dtype, max error and where), never expected arrays or hidden test source.

``python -m rnnkit.grading.judge --serve`` answers JSON requests ``{"name": ..., "path": ...}`` one per line with
``{"passed": ..., "message": ...}``: :func:`rnnkit.grading.check` uses it to judge outside the student's kernel.
"""
from __future__ import annotations

import json
import sys
from typing import NamedTuple

import numpy as np

from . import export, guard, specs
from .rules import Rule

MAX_FAILED_SHOWN = 2  # failing cases described in full; the others are only named


class Verdict(NamedTuple):
    passed: bool  # every case passed
    message: str
    score: float = 0.0  # share of the check's points earned: the weights of the passing cases over all weights


_TYPE_WORDS = {"torch.Tensor": "a torch.Tensor", "float": "a Python float", "int": "a Python int",
               "bool": "a Python bool", "str": "a str", "None": "None"}
_HINTS = {("float", "torch.Tensor"): " (use .item() to turn a 1-element tensor into a float)",
          ("int", "torch.Tensor"): " (use int(...) or .item())",
          ("int", "float"): " (use int(...) or integer arithmetic: //)",
          ("torch.Tensor", "other:numpy.ndarray"): " (build it with torch, not numpy)"}


def _type_word(name: str) -> str:
    if name.startswith("other:"):
        return f"an object of type {name[6:].rsplit('.', 1)[-1]}"
    return _TYPE_WORDS.get(name, name)


def _describe(structure: str) -> str:
    if structure.startswith("("):
        items = _split(structure[1:-1])
        return f"a tuple/list of {len(items)} item{'s' * (len(items) != 1)}"
    if structure.startswith("{"):
        keys = [item.split(":", 1)[0] for item in _split(structure[1:-1])]
        return "a dict with keys " + ", ".join(repr(k) for k in keys)
    return {"T": "a tensor", "f": "a float", "i": "an int", "b": "a bool", "s": "a str", "n": "None"}.get(
        structure, "an unsupported object")


def _expected_text(want: dict, key: str) -> str:
    """A string entry of the expected export (live or a stored fixture), which always has it."""
    value = export.text(want, key)
    if value is None:
        raise ValueError(f"the expected export has no string {key!r} (a stale fixture? run `make fixtures`)")
    return value


def _split(inner: str) -> list[str]:
    """Split the items of a structure string at top-level commas."""
    items, depth, start = [], 0, 0
    for k, ch in enumerate(inner):
        depth += ch in "({"
        depth -= ch in ")}"
        if ch == "," and depth == 0:
            items.append(inner[start:k])
            start = k + 1
    if inner:
        items.append(inner[start:])
    return items


def _leaf_name(spec: specs.Spec, j: int, n_leaves: int) -> str:
    if j < len(spec.leaf_names):  # "output h_n"; a leaf itself called "output" is not "output output"
        return "the output" if spec.leaf_names[j] == "output" else f"output {spec.leaf_names[j]}"
    return "the output" if n_leaves == 1 else f"output item {j}"


def _where(index: tuple[int, ...], ndim: int) -> str:
    return f" at index {tuple(int(i) for i in index)}" if ndim else ""


def _compare_values(spec, what: str, expected: np.ndarray, got: np.ndarray, dtype: str) -> str | None:
    if got.shape != expected.shape:
        return f"{what} has malformed values"
    if expected.dtype.kind in "biuU":
        if got.dtype.kind != expected.dtype.kind and not (got.dtype.kind in "iu" and expected.dtype.kind in "iu"):
            return f"{what} has values of the wrong kind"
        wrong = np.argwhere(~np.asarray(got == expected, dtype=bool))  # works for 0-d arrays too
        if len(wrong):
            return f"{what} differs{_where(tuple(wrong[0]), expected.ndim)} ({len(wrong)} of {max(expected.size, 1)} " \
                   f"entries wrong)"
        return None
    if got.dtype.kind not in "fiub":
        return f"{what} has values of the wrong kind"
    want = expected.astype(np.float64)
    have = got.astype(np.float64)
    bad = ~np.isfinite(have) & np.isfinite(want)
    if bad.any():
        index = tuple(np.argwhere(bad)[0]) if have.ndim else ()
        kind = "NaN" if np.isnan(have[bad]).any() else "inf"
        return f"{what} contains {kind}{_where(index, have.ndim)} where a finite value was expected"
    rtol, atol = spec.tolerance(dtype)
    err = np.abs(have - want)
    err = np.where(np.isfinite(want), err, np.where(have == want, 0.0, np.inf))
    ok = err <= atol + rtol * np.abs(want)
    if not ok.all():
        index = tuple(np.unravel_index(int(np.argmax(np.where(ok, -1.0, err))), err.shape)) if err.ndim else ()
        return f"{what} differs from the expected values{_where(index, err.ndim)}, max error " \
               f"{float(err[~ok].max()):.3g} (tolerance {atol:.0e} + {rtol:.0e} x |expected|)"
    return None


def _compare_leaf(spec, j: int, n_leaves: int, got: dict, want: dict) -> str | None:
    what = _leaf_name(spec, j, n_leaves)
    key = f"l{j}"
    want_type = _expected_text(want, f"{key}.type")
    got_type = export.text(got, f"{key}.type", "missing")
    if got_type != want_type:
        return f"{what} should be {_type_word(want_type)}, got {_type_word(got_type)}" + _HINTS.get(
            (want_type, got_type), "")
    if want_type == "None":
        return None
    dtype = want_type
    if want_type == "torch.Tensor":
        want_dtype, got_dtype = _expected_text(want, f"{key}.dtype"), export.text(got, f"{key}.dtype", "?")
        if got_dtype != want_dtype:
            return f"{what} has dtype {got_dtype}, expected {want_dtype} (results should follow the input's dtype)"
        want_shape = tuple(want[f"{key}.shape"].tolist())
        got_shape = tuple(np.asarray(got.get(f"{key}.shape", [-1])).tolist())
        if got_shape != want_shape:
            return f"{what} has shape {got_shape}, expected {want_shape}"
        dtype = want_dtype
    if f"{key}.value" not in got:
        return f"{what} could not be read (too large or unsupported)"
    return _compare_values(spec, what, want[f"{key}.value"], np.asarray(got[f"{key}.value"]), dtype)


def compare_case(spec: specs.Spec, got: dict, want: dict, case: int) -> str | None:
    """Why one case fails, or None when it passes. ``got``/``want`` are :func:`export.case_part` dicts."""
    status = export.text(got, "status")
    if status is None:
        return "no result was recorded (the check did not reach this case)"
    if status == "error":
        return f"your function raised {export.text(got, 'error', 'an exception')}"
    if status != "ok":
        return "the result could not be read"
    if spec.judge is not None:
        return spec.judge(got, want, case)
    want_structure = _expected_text(want, "structure")
    got_structure = export.text(got, "structure", "?")
    if got_structure != want_structure:
        if not want_structure.startswith(("(", "{")) and not got_structure.startswith(("(", "{")):
            return _compare_leaf(spec, 0, 1, got, want)  # two different single values: say which types
        if _describe(got_structure) == _describe(want_structure):
            return f"the result should be {_describe(want_structure)}, but the types of its items differ " \
                   "(" + _first_type_difference(spec, got, want, want_structure) + ")"
        if not spec.leaf_names and want_structure.startswith("(") and got_structure.startswith("("):
            # a list whose length is part of the answer (a sample): say that it differs, never the expected length
            return f"the result is {_describe(got_structure)}: not the expected number of items"
        return f"the result should be {_describe(want_structure)}, got {_describe(got_structure)}"
    n_leaves = sum(1 for key in want if key.endswith(".type"))
    for j in range(n_leaves):
        message = _compare_leaf(spec, j, n_leaves, got, want)
        if message:
            return message
    return None


def _first_type_difference(spec, got: dict, want: dict, structure: str) -> str:
    n_leaves = sum(1 for key in want if key.endswith(".type"))
    for j in range(n_leaves):
        a, b = _expected_text(want, f"l{j}.type"), export.text(got, f"l{j}.type", "missing")
        if a != b:
            return f"{_leaf_name(spec, j, n_leaves)} should be {_type_word(a)}, got {_type_word(b)}"
    return "nested differently"


def compare_exports(spec: specs.Spec, got: dict, want: dict) -> list[tuple[int, str]]:
    """(case index, message) for every failing case of ``got`` against ``want``."""
    failures = []
    for i in range(int(want["cases"])):
        message = compare_case(spec, export.case_part(got, i), export.case_part(want, i), i)
        if message:
            failures.append((i, message))
    return failures


def rule_message(function: str, called: str, rule: Rule) -> str:
    """The feedback line for a forbidden call seen while the function ran (the static check words its own)."""
    return f"{function}: calls {called} — {rule.why}"


def _conduct(spec: specs.Spec, exported: dict) -> str | None:
    """Why the whole check fails whatever its values (a forbidden call, a modified input, a missing or tampered
    record of the calls), or None. Only for function specs: a value has no call to watch."""
    if spec.kind != "function":
        return None
    function = export.text(exported, "function", spec.name)
    for i in range(int(exported.get("cases", 0))):
        if export.text(exported, f"c{i}.status") is None:
            continue  # the case never ran: compare_case says so
        record = guard.CallRecord.from_export(exported, f"c{i}.guard.")
        if record is None:
            return f"{function}: the grader's record of what your function called is missing or unreadable"
        if not record.complete:
            return f"{function}: the grader's watch on what your function calls was switched off or altered " \
                   "while it ran"
        if record.calls:
            return rule_message(function, record.calls[0], spec.rule)
        changed = exported.get(f"c{i}.changed")
        if changed is None or changed.dtype.kind != "U" or changed.ndim != 1:
            return f"{function}: the grader's record of its inputs is missing or unreadable"
        changed = [str(name) for name in changed if str(name) not in spec.may_change]
        if changed:
            return f"{function} changed its argument {changed[0]} in place (case '{_labels(spec)[i]}'): " \
                   "compute new tensors and leave the inputs as they were"
    return None


def _labels(spec: specs.Spec) -> list[str]:
    return [case.label for case in spec.make_cases()] if spec.kind == "function" else ["the value"]


def compare(name: str, exported: dict) -> Verdict:
    """Judge one check: the student's export against the live reference and the stored fixture.

    A check scores the weighted share of its cases that pass (partial credit); a forbidden call, a modified input
    or a missing record of either scores 0. The message names every failing case."""
    try:
        spec = specs.get(name)
    except KeyError:
        return Verdict(False, f"{name}: unknown check")
    if export.text(exported, "spec") != name or export.text(exported, "format") != export.EXPORT_FORMAT:
        return Verdict(False, f"{name}: the exported results are missing or belong to another check")
    stored = specs.stored_export(name)
    if stored is None and specs.FIXTURE_DIR.is_dir():  # no folder at all: a student's copy, judged live only
        return Verdict(False, f"{name}: grader error: no fixture stored (instructor: run `make fixtures`)")
    if int(exported.get("cases", -1)) != int(specs.expected_export(name)["cases"]):
        return Verdict(False, f"{name}: the exported results have the wrong number of cases")
    conduct = _conduct(spec, exported)
    if conduct:
        return Verdict(False, conduct)
    labels = _labels(spec)
    weights = [case.weight for case in spec.make_cases()] if spec.kind == "function" else [1.0]
    failures: dict[int, str] = {}
    for want in filter(None, (specs.expected_export(name), stored)):  # both must agree with the student's result
        for i, message in compare_exports(spec, exported, want):
            failures.setdefault(i, message)
    n = len(labels)
    if not failures:
        return Verdict(True, f"{name}: passed ({n} case{'s' * (n != 1)})", 1.0)
    score = sum(w for i, w in enumerate(weights) if i not in failures) / sum(weights)
    if spec.kind != "function":
        return Verdict(False, f"{name}: {failures[0]}", score)
    lines = [f"{name}: {n - len(failures)} of {n} cases pass"]
    for k, i in enumerate(sorted(failures)):
        lines.append(f"  case '{labels[i]}': " + (failures[i] if k < MAX_FAILED_SHOWN else "fails"))
    return Verdict(False, "\n".join(lines), score)


def serve(stdin=sys.stdin, stdout=sys.stdout) -> None:
    """Answer judge requests (one JSON object per line) until stdin closes."""
    for line in stdin:
        try:
            request = json.loads(line)
            verdict = compare(str(request["name"]), export.load(str(request["path"])))
        except Exception as exc:  # a grader bug or an unreadable export: scored 0, reported
            verdict = Verdict(False, f"grader error while judging: {type(exc).__name__}")
            print(f"rnnkit.grading.judge: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        stdout.write(json.dumps({"passed": bool(verdict.passed), "message": verdict.message,
                                 "score": float(verdict.score)}) + "\n")
        stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:] != ["--serve"]:
        sys.exit("usage: python -m rnnkit.grading.judge --serve")
    serve()
