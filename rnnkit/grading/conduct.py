"""The rule table enforced statically, in the trusted parent, before the sandbox's exports are judged.

For every graded check, the answer the hidden test hands to ``grading.check`` (``lstm_cell_forward``) is read — never
run — in the student's code cells with :func:`rnnkit.grading.static_check.check_function` against the check's rule
(:mod:`rnnkit.grading.specs.table`): imports and aliases resolved, the student's own helpers followed. A finding
fails the check with its generated message; a "dynamic" finding (a computed ``getattr``, ``exec``, ``__import__``
...) also asks for a human: the test cell is marked "needs manual grade" in the gradebook, so an instructor can
restore the points in formgrader after a look. The sandbox's guard catches the same delegations at run time
(:func:`rnnkit.grading.export.collect`), independently.
"""
from __future__ import annotations

from collections.abc import Sequence

import nbformat

from . import notebooks, specs
from .static_check import Finding, check_function

MAX_SHOWN = 3  # findings listed per check


def notebook_code(executed: nbformat.NotebookNode) -> list[str]:
    """The code of the notebook that ran, one entry per cell (markdown cells as empty strings, so a finding's cell
    index is the notebook's): the student's answers and the course's own setup and test cells, whose imports and
    globals an answer may use."""
    return [cell.source if cell.cell_type == "code" else "" for cell in executed.cells]


def findings(src: notebooks.SourceNotebook, executed: nbformat.NotebookNode) -> dict[str, list[Finding]]:
    """check name -> what its answer uses against its rule (an empty list: nothing)."""
    cells = notebook_code(executed)
    found: dict[str, list[Finding]] = {}
    for graded in src.graded:
        for name in graded.checks:
            function = graded.functions.get(name)
            if function is not None:
                found[name] = check_function(cells, function, specs.get(name).rule)
    return found


def message(name: str, found: Sequence[Finding]) -> str:
    """The feedback for a check failed by its findings: the generated lines, and whether a human will look."""
    lines = [f"{name}: breaks the rules of this part"] + [f"  {f.message}" for f in found[:MAX_SHOWN]]
    if len(found) > MAX_SHOWN:
        lines.append(f"  ... and {len(found) - MAX_SHOWN} more")
    if any(f.needs_manual_grade for f in found):
        lines.append("  (code the grader cannot read statically: your instructor will look at this part by hand)")
    return "\n".join(lines)


def needs_manual_grade(found: Sequence[Finding]) -> bool:
    return any(f.needs_manual_grade for f in found)
