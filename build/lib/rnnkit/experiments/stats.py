r"""Summaries of repeated runs (one value per seed) and the rule the book uses to call one model better.

A difference between two models counts only when it is larger than the spread of the runs: with means
:math:`\bar a, \bar b` and sample standard deviations :math:`s_a, s_b` over seeds, "A is better (lower)" requires

.. math:: \bar b - \bar a > s_a + s_b ,

i.e. the intervals :math:`\bar a \pm s_a` and :math:`\bar b \pm s_b` do not overlap. With one seed there is no
spread, so no model is called better. This is a deliberately plain rule for three or so seeds, not a significance
test: with n = 3 a t-test has little power, and the reader can check the rule against the table by eye.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Summary", "summarize", "compare"]


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (``None`` for one value), minimum and maximum of ``n`` runs."""

    mean: float
    sd: float | None
    min: float
    max: float
    n: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "sd": self.sd, "min": self.min, "max": self.max, "n": self.n}

    def format(self, digits: int = 2) -> str:
        """``"8.86 ± 0.03"`` (or ``"8.86"`` for one run)."""
        return f"{self.mean:.{digits}f}" if self.sd is None else f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


def summarize(values) -> Summary:
    """Summary of a non-empty sequence of finite numbers (one per seed)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summarize: expected at least one value, got none")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"summarize: expected finite values, got {values}")
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None  # sample sd (n - 1)
    return Summary(mean, sd, min(values), max(values), n)


def compare(a: Summary, b: Summary) -> int:
    """-1 if ``a`` is lower than ``b`` by more than ``a.sd + b.sd``, +1 if higher by more, 0 if the difference is
    within the spread (or either has a single run, so no spread is known)."""
    if a.sd is None or b.sd is None:
        return 0
    diff = b.mean - a.mean
    if abs(diff) <= a.sd + b.sd:
        return 0
    return -1 if diff > 0 else 1
