"""Grading for the course's nbgrader assignments: hidden tests call ``grading.check(name, fn)``.

* :mod:`~rnnkit.grading.specs` — per check: seeded cases, a live reference from rnnkit, tolerances
* :mod:`~rnnkit.grading.export` — the plain-data (npz, no pickle) format of results
* :mod:`~rnnkit.grading.check` — runs the student's function, exports or judges out of process
* :mod:`~rnnkit.grading.judge` — the trusted comparison with generated, student-safe messages
* :mod:`~rnnkit.grading.fixtures` — stored expected values (``python -m rnnkit.grading.fixtures --write/--check``)
"""
from .check import EXPORT_ENV, check

__all__ = ["check", "EXPORT_ENV"]
