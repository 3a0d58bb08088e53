"""Student-facing wording of why a check has no result, from what the sandbox reported. Wording only, never a
score: every record read here is untrusted (the student's kernel could have forged it), so it may change a sentence
but nothing else."""
from __future__ import annotations

import json
import re
from collections.abc import Set

from . import sandbox

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_FRAME = re.compile(r"(?:line \d+|:\d+), in ([A-Za-z_]\w*)\(")  # a frame header: "Cell In[3], line 5, in f(x)"


def kernel_never_started(result: sandbox.Result | None) -> bool:
    """The runner reported a kernel failure before any cell ran: none of the student's code ran."""
    return result is not None and "kernel-error.json" in result.records and not any(
        name.startswith("cell/") for name in result.records)


def kernel_error(result: sandbox.Result) -> str:
    """The runner's account of a kernel failure, for the instructor's log only (untrusted, so cut to one line)."""
    try:
        record = json.loads(result.records["kernel-error.json"].decode())
        text = f"{record.get('error')}: {record.get('message')}"
    except (KeyError, ValueError, AttributeError, UnicodeDecodeError):
        return "no details"
    return re.sub(r"[^ -~]", " ", text)[:300]


def _raised_in(status: dict, answers: Set[str]) -> str | None:
    """The student's answer function the error came from (innermost frame), when it is one: a test cell that also
    calls an earlier part's function (a visible test printing with it) stops on that part's NotImplementedError."""
    outputs = status.get("outputs")
    for out in reversed(outputs if isinstance(outputs, list) else []):
        if isinstance(out, dict) and out.get("output_type") == "error" and isinstance(out.get("traceback"), list):
            text = _ANSI.sub("", "\n".join(t for t in out["traceback"] if isinstance(t, str)))
            names = [n for n in _FRAME.findall(text) if n in answers]
            return names[-1] if names else None
    return None


def _assertion(status: dict, scrub) -> str | None:
    """The visible test's own message (it says what to fix), one line, scrubbed of hidden test lines (a kernel can
    raise anything, its own input history included)."""
    outputs = status.get("outputs")
    for out in reversed(outputs if isinstance(outputs, list) else []):
        if isinstance(out, dict) and out.get("output_type") == "error":
            text = " ".join(scrub(_ANSI.sub("", str(out.get("evalue") or ""))).split())
            return text[:300] + ("..." if len(text) > 300 else "") if text else None
    return None


def reason(status: dict | None, result: sandbox.Result, limits: sandbox.Limits, answers: Set[str] = frozenset(),
           scrub=lambda text: text) -> str:
    """Why a check produced no result. ``answers``: names the student's answer cells define; ``scrub``: removes
    hidden test lines from text (:class:`rnnkit.grading.notebooks.Scrubber`)."""
    if status is None:
        if kernel_never_started(result):
            return "the grader could not start a Python kernel for this notebook (a grading problem, not yours: " \
                   "your instructor will re-run it)"
        if result.killed:
            return f"the notebook was stopped at the {limits.submission_timeout:g} s limit for a whole submission " \
                   "before this check ran"
        if "done.json" not in result.records:
            return "the grading run was cut short before this check ran (the kernel or its runner was killed)"
        return "this cell did not run"
    kind = status.get("status")
    ename = str(status.get("ename") or "")[:60]
    if kind == "timeout":
        return f"the cell ran past the {limits.cell_timeout:g} s limit per cell and was interrupted " \
               "(an infinite loop?)"
    why = status.get("why")
    if kind == "died" or (kind == "skipped" and why == "died"):
        return "the kernel died while this cell ran (os._exit, a crash such as a segfault, or the memory limit), " \
               "so the re-run skipped it"
    if kind == "skipped":
        return f"the cell ran past the {limits.cell_timeout:g} s limit per cell (an infinite loop?), so the re-run " \
               "skipped it"
    if kind == "error":
        hint = " (is the function defined, and did its cell run?)" if ename == "NameError" else ""
        if ename == "AssertionError":
            said = _assertion(status, scrub)
            hint = f": a visible test in this cell failed: {said}" if said else \
                " (a visible test in this cell failed: run it in your notebook to see why)"
        where = _raised_in(status, answers)
        where = f" (raised in your {where})" if where else ""
        return f"the test cell stopped with {ename or 'an error'}{where} before this check ran{hint}"
    if kind == "ok":
        return "the cell finished but this check recorded no result (was grading.check replaced?)"
    return "this check recorded no result"


def incidents(executed, cell_records: dict[int, dict], graded_ids: set[str], limits: sandbox.Limits
              ) -> list[tuple[int, str]]:
    """(index, text) for the student's own cells that did not finish, to explain a missing result after them."""
    found = []
    for i, cell in enumerate(executed.cells):
        record = cell_records.get(i)
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if record and gid not in graded_ids and record.get("status") in ("error", "timeout", "died", "skipped"):
            what = gid or f"cell {i + 1}"
            why = record.get("why")
            how = {"timeout": f"ran past the {limits.cell_timeout:g} s limit per cell",
                   "died": "killed the kernel (os._exit, a crash or the memory limit)",
                   "skipped": "killed the kernel (os._exit, a crash or the memory limit), so the re-run skipped it"
                   if why == "died" else f"ran past the {limits.cell_timeout:g} s limit per cell, so the re-run "
                                         "skipped it",
                   "error": f"raised {str(record.get('ename') or 'an error')[:60]}"}[record["status"]]
            found.append((i, f"{what} {how}"))
    return found
