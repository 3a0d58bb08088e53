"""What a graded answer may not use: one :class:`Rule` per graded check, stored on its spec (``Spec.rule``).

A rule is plain data so that every consumer reads the same table:

* the notebook's "Rules" paragraph is generated from it (:func:`describe`);
* the trusted parent enforces it statically on the student's answer cells (AST, aliases resolved, the student's own
  helpers followed);
* the sandbox records forbidden calls while the graded function runs, and the judge fails a check whose record
  shows one;
* the visible self-check runs the same static check, so an honest student sees the problem before submitting.

Names are fully qualified (``torch.nn.LSTMCell``, ``torch.lstm_cell``, ``rnnkit.cells.lstm_cell``); patterns use
:mod:`fnmatch` syntax (``torch._VF.*``, ``torch.nn.utils.clip_grad_*``). ``allowed`` wins over ``forbidden``, so a
rule can forbid ``rnnkit.*`` and still hand out ``rnnkit.data.pad_batch``.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class Rule:
    # qualified names or fnmatch patterns the answer must not call, read or build (classes count when instantiated)
    forbidden: tuple[str, ...]
    # why, shown to the student after the name: "this exercise asks you to write the LSTM equations yourself"
    why: str
    # exceptions to ``forbidden`` and the things the notebook explicitly allows (listed in the Rules paragraph)
    allowed: tuple[str, ...] = ()
    # parameters of the graded function that must not be called (``cell(x, h)`` or ``cell.forward(x, h)``
    # when the exercise hands the student a module to read weights from)
    uncallable_args: tuple[str, ...] = ()

    def forbids(self, qualname: str) -> bool:
        """True when ``qualname`` (e.g. ``"torch.nn.modules.rnn.LSTMCell"`` already mapped to its public name)
        matches a forbidden pattern and no allowed one."""
        if any(fnmatchcase(qualname, p) or qualname.startswith(p + ".") for p in self.allowed):
            return False
        return any(fnmatchcase(qualname, p) or qualname.startswith(p + ".") for p in self.forbidden)


def describe(rule: Rule) -> str:
    """One Markdown sentence for the notebook's Rules paragraph."""
    names = ", ".join(f"`{p}`" for p in rule.forbidden)
    text = f"Do not use {names}: {rule.why}."
    if rule.uncallable_args:
        text += " Do not call " + ", ".join(f"`{a}`" for a in rule.uncallable_args) + " itself."
    if rule.allowed:
        text += " You may use " + ", ".join(f"`{p}`" for p in rule.allowed) + "."
    return text
