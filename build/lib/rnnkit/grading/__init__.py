"""Grading for the course's nbgrader assignments: hidden tests call ``grading.check(name, fn)``, visible tests call
``grading.rules(name, fn)``.

In the student's kernel:

* :mod:`~rnnkit.grading.check` — ``check``: runs the student's function, exports or judges out of process; ``rules``:
  the static rule check on the kernel's cells
* :mod:`~rnnkit.grading.export` — runs the cases and writes the plain-data (npz, no pickle) format of results
* :mod:`~rnnkit.grading.guard` — records forbidden calls while a graded function runs
* :mod:`~rnnkit.grading.specs` — per check: seeded cases, a live reference from rnnkit, tolerances, and the rule
  table (:mod:`~rnnkit.grading.specs.table`) of what each answer must not use (types in :mod:`~rnnkit.grading.rules`)
* :mod:`~rnnkit.grading.static_check` — reads an answer's code (AST) against its rule

Trusted (the instructor's process):

* :mod:`~rnnkit.grading.judge` — the comparison with generated, student-safe messages and partial credit
* :mod:`~rnnkit.grading.fixtures` — stored expected values in ``solutions/fixtures/``
  (``python -m rnnkit.grading.fixtures --write/--check/--list``)
* :mod:`~rnnkit.grading.autograde` — ``make autograde``: submissions → sandbox → judge → gradebook and feedback, with
  :mod:`~rnnkit.grading.submissions` (finding the notebook), :mod:`~rnnkit.grading.notebooks` (what is graded, what
  runs, what is shown), :mod:`~rnnkit.grading.conduct` (the rules enforced statically), :mod:`~rnnkit.grading.sandbox`
  and :mod:`~rnnkit.grading.runner` (bubblewrap, the kernel inside) and :mod:`~rnnkit.grading.reasons` (why a check
  has no result)
* :mod:`~rnnkit.grading.release` — ``make release``: ``exercises/`` from ``solutions/``, Rules text from the table
"""
from .check import EXPORT_ENV, check, rules

__all__ = ["check", "rules", "EXPORT_ENV"]
