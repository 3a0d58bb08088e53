"""Static enforcement of a graded check's :class:`~rnnkit.grading.rules.Rule`: the trusted process reads the
student's code cells (never runs them) and lists what the graded function reaches that the rule forbids.

    findings = check_function(cells, "lstm_cell_forward", spec.rule)

Followed from the graded function: imports and aliases in every cell (``import torch as T``,
``from torch import lstm_cell as f``, ``nn = torch.nn``, tuple assignment; a name means everything it is ever
bound to, in any cell), attribute chains through local names, ``getattr`` with a constant name, the student's own
functions, lambdas and classes (every method of a class the answer touches), nested defs, decorators, default
arguments, globals the function reads (and the code that computed them), attributes stored on objects
(``self.op = torch.lstm_cell``, ``torch.tanh = torch.lstm_cell``), what the student's functions return, and the
names a ``from M import *`` may bind. A reference counts, not only a call: passing ``torch.lstm_cell`` as a value,
``functools.partial``, subclassing. Dynamic access and file reads (``open``, ``np.load``, ``torch.load``,
``importlib.resources``, ``Path.read_bytes``) anywhere reached are findings of their own kinds. Other names of the
same object count as the one the rule names (:func:`~rnnkit.grading._ast_names.equivalents`). A name no given cell
binds is taken to be the module of that name (``torch``), or its usual import (``np``, ``F``, ``nn``).

A method called on an object of unknown type (``loss.backward()``) is matched by its name alone, against rule
patterns ``*.backward`` and ``Class.method`` patterns such as ``torch.Tensor.backward`` (the owner capitalised, so
forbidding ``torch.autograd.grad`` never makes reading ``p.grad`` a finding).

What it cannot see (the sandbox's runtime guard is there for these):

* which of several bindings is live when the function runs: every binding counts, so a forbidden name bound and
  rebound before use is still reported;
* values computed at run time: ``getattr`` with a computed name, ``exec``/``eval``, ``__import__``/``importlib``,
  ``sys.modules``, ``globals()``, frames, ``get_ipython``, ``ctypes``, unpickling. These are "dynamic" findings
  (``needs_manual_grade``), as is a reached name only such code or an unparsable cell could define, and the graded
  function itself inside a cell that does not parse;
* code outside the cells: a module the student writes to disk and imports, the inside of library functions (a
  library routine the answer may call that itself calls a forbidden one);
* a library method called on an object of unknown type, other than by its name as above;
* an uncallable argument inside a library function it is handed to: handing it to anything but the student's own
  functions and classes or a few builtins that never call it (``isinstance``, ``getattr``, ``print``...) is itself
  reported ("passes cell to map, which may call it").

The parsed cells of a notebook are kept (the last 8 notebooks of normal size), so checking its graded functions one
by one parses them once.
"""
from __future__ import annotations

import ast
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ._ast_names import (
    CALL_ATTRS,
    DYNAMIC,
    DYNAMIC_ATTRS,
    FILE,
    SAFE_PASS,
    UNKNOWN,
    Resolver,
    TooComplex,
    constant_name,
    dynamic_sources,
    equivalents,
    unparse,
)
from ._ast_scopes import Program, Scope, bind_program
from .rules import Rule

_ROUNDS = 6           # re-runs while an uncallable argument flows into more of the student's functions
_CACHED = 200_000     # characters: the parsed cells of notebooks up to this size are kept for the next check
_PERSON = "an instructor will look at this answer"
_MANUAL = f"which static checking cannot follow: {_PERSON}"


@dataclass(frozen=True)
class Finding:
    function: str   # the graded function the finding was reached from
    cell: int       # index into the ``cells`` sequence given
    line: int       # 1-based line inside that cell
    name: str       # resolved qualified name ("torch.nn.LSTMCell") or the dynamic construct
    kind: str       # "forbidden" | "uncallable-arg" | "dynamic" | "file"
    message: str    # student-facing: the function, the line, what it used and why that is not allowed

    @property
    def needs_manual_grade(self) -> bool:
        """True where static analysis could not resolve what the answer does: a person decides."""
        return self.kind == "dynamic"


def check_function(cells: Sequence[str], function: str, rule: Rule) -> list[Finding]:
    """What ``function``, defined in ``cells`` (a notebook's code cells in order), reaches that ``rule`` forbids,
    plus dynamic access and file reads: one finding per thing, the most direct first. [] when it reaches nothing
    of the kind or is not defined at all. Never runs the cells, and whatever they hold never raises (only a
    ``function`` that is not a str or a ``rule`` that is not a Rule is a TypeError)."""
    if not isinstance(function, str) or not isinstance(rule, Rule):
        raise TypeError(f"check_function expected a function name (str) and a Rule, got "
                        f"{type(function).__name__} and {type(rule).__name__}")
    checker = _Checker(function, rule)
    try:
        cells = tuple(str(c) for c in cells)
        checker.run(_program(cells) if sum(map(len, cells)) < _CACHED else bind_program(cells), cells)
    except TooComplex:
        checker.add("dynamic", "too large to check", checker.where, (), f"is too large to check: {_PERSON}")
    except (RecursionError, MemoryError):
        checker.add("dynamic", "too deeply nested to check", checker.where, (),
                    f"is nested too deeply to check: {_PERSON}")
    except Exception as error:  # a bug here must not stop grading: the answer goes to a person instead
        checker.add("dynamic", "internal error", checker.where, (), f"could not be checked ({type(error).__name__}): "
                    f"{_PERSON}")
    return checker.findings


@lru_cache(maxsize=8)
def _program(cells: tuple[str, ...]) -> Program:
    """The parsed cells, shared by the checks of one notebook's graded functions (read-only once bound)."""
    return bind_program(cells)


def _expand(rule: Rule) -> Rule:
    """``rule`` with the other names of each concrete pattern added (``rnnkit.lstm_cell`` also forbids
    ``rnnkit.cells.lstm_cell``)."""
    def more(patterns):
        extra = [n for p in patterns if not any(c in p for c in "*?[") for n in sorted(equivalents(p) - {p})]
        return tuple(patterns) + tuple(extra)
    return Rule(more(rule.forbidden), rule.why, more(rule.allowed), rule.uncallable_args)


class _Checker(Resolver):
    def __init__(self, function: str, rule: Rule):
        super().__init__(Program([], set()))
        self.function, self.rule, self.why = function, _expand(rule), rule.why
        self.allowed = Rule(self.rule.allowed, "")   # its forbids() answers "is this name allowed?"
        self.findings: list[Finding] = []
        self.where = (0, 1)                          # the cell and line being looked at, for a last-resort finding
        self.grew = False                            # a round found a new tainted parameter: walk again
        self.seen: set[tuple[int, frozenset[tuple[str, str]] | None]] = set()   # (what was visited, its taint)
        self.callees: set[int] = set()               # id() of each call's func node
        self.exempt: set[int] = set()                # id() of a getattr/setattr/delattr name, not reported itself

    # -- the walk ---------------------------------------------------------------------------------------------

    def run(self, program: Program, cells: tuple[str, ...]) -> None:
        self.p, self.cells = program, cells
        starts = program.globals.get(self.function, [])
        starts = starts + self.star_bindings(self.function, exact=bool(starts))
        if not starts:   # not defined (then the check fails anyway), or in a cell too long to check: a person looks
            for i in sorted(program.unsure):
                if re.search(rf"\b{re.escape(self.function)}\b", cells[i]):
                    self.add("dynamic", "a cell not checked", (i, 1), (), "", f"{self.function} is in cell {i}, which "
                             f"is too long or too deeply nested to check: {_PERSON}")
                    break
            return
        for b in starts:
            if b.kind == "def" and isinstance(b.payload, Scope) and b.payload.kind == "function":
                self.taint[b.payload] = {a: a for a in self.rule.uncallable_args if a in _params(b.payload)}
        for _ in range(_ROUNDS):
            self.findings, self.grew, self.memo, self.undefined, self.seen = [], False, {}, set(), set()
            self.callees, self.exempt = set(), set()
            self.queue = deque(("binding", b, ()) for b in starts)
            while self.queue:
                self.visit(*self.queue.popleft())
            if not self.grew:
                break
        self.undefined_names()

    def visit(self, what, obj, path):
        key = id(obj[0]) if what == "expr" else id(obj)
        key = (key, frozenset(self.taint.get(obj, {}).items()) if what == "scope" else None)
        if key in self.seen:
            return
        self.seen.add(key)
        if what == "binding" and obj.kind == "def":
            self.visit("scope", obj.payload, path)
        elif what == "binding" and obj.kind == "ext":   # `from torch import lstm_cell as lstm_cell_forward`
            self.report({("ext", obj.payload)}, obj.node, obj.scope, path, obj.name, callee=True)
        elif what == "binding" and obj.kind == "expr":
            self.walk([obj.payload], obj.scope, path)
        elif what == "expr":
            self.walk([obj[0]], obj[1], path)
        elif what == "scope":   # decorators, defaults and bases run in the enclosing scope, the body in its own
            node = obj.node
            outer = [*getattr(node, "decorator_list", ()), *getattr(node, "bases", ()),
                     *(k.value for k in getattr(node, "keywords", ()))]
            if hasattr(node, "args"):
                outer += node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
            self.walk(outer, obj.parent, path)
            self.walk(node.body if isinstance(node.body, list) else [node.body], obj, path)

    def walk(self, nodes, scope: Scope, path):
        stack = list(reversed(nodes))
        while stack:
            node = stack.pop()
            self.tick()
            self.where = (scope.cell, getattr(node, "lineno", self.where[1]))
            if id(node) in self.p.scopes:   # a nested def, lambda or class is part of the code that reaches it
                self.queue.append(("scope", self.p.scopes[id(node)], path))
            elif isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
                self.reference(node, scope, path)
            else:
                if isinstance(node, ast.Call):
                    self.call(node, scope, path)
                # strings never count; annotations are not evaluated for what they name
                children = [c for c in ast.iter_child_nodes(node)
                            if not isinstance(c, (ast.Import, ast.ImportFrom, ast.Constant, ast.expr_context))]
                if isinstance(node, ast.AnnAssign):
                    children = [c for c in (node.target, node.value) if c is not None]
                stack += reversed(children)

    def reference(self, node, scope, path):
        """Report what a name or attribute chain denotes (only the whole chain is matched: `rnnkit.data` on the
        way to an allowed `rnnkit.data.pad_batch` is fine)."""
        chain, base = [], node
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        chain.reverse()
        callee, written = id(node) in self.callees, unparse(node)
        if isinstance(base, ast.Name):
            values = self.name_values(base, scope, path, callee and not chain, report=not chain)
        else:   # `f(x).attr`: f(x) first, its findings are the more direct ones
            self.walk([base], scope, path)
            values = self.resolve(base, scope)
        for attr in chain:
            if attr in DYNAMIC_ATTRS:
                self.add("dynamic", f"the {attr} attribute", self.at(node, scope), path, f"uses {written}, {_MANUAL}")
            if UNKNOWN in values:
                self.method_by_name(attr, node, scope, path, written)
            values = set().union(*(self.attr_of(v, attr) for v in values))
        if chain:
            self.report(values, node, scope, path, written, callee)

    def name_values(self, name, scope, path, callee, report):
        """The values of a name; the code that computed them (a global's assignment) is reached too."""
        bindings, values = self.lookup(name.id, scope)
        for b in bindings:   # a function's own assignments are walked with its body
            if b.kind == "expr" and (b.scope is not scope or scope.kind == "module"):
                hop = ("calls" if callee else "uses", b.name, b.scope.cell, getattr(b.node, "lineno", 1))
                self.queue.append(("binding", b, path + (hop,)))
        values = values.union(*(self.binding_values(b) for b in bindings))
        if report and id(name) not in self.exempt:
            self.report(values, name, scope, path, name.id, callee)
        return values

    def call(self, node, scope, path):
        self.callees.add(id(node.func))
        funcs, written = self.resolve(node.func, scope), unparse(node.func)
        if {("ext", "builtins." + n) for n in ("getattr", "setattr", "delattr")} & funcs:
            self.exempt.add(id(node.func))
            if not constant_name(node):
                self.add("dynamic", f"{written} with a computed name", self.at(node, scope), path,
                         f"calls {written} with a computed name, {_MANUAL}")
            elif ("ext", "builtins.getattr") in funcs:   # getattr(torch, "lstm_cell") is torch.lstm_cell
                self.report(self.call_result(node, scope), node, scope, path, unparse(node), callee=False)
        for v in funcs:
            if v[0] == "param" and (not v[2] or v[2][-1] in CALL_ATTRS):
                given = "" if written.split(".")[0] == v[1] else f" (its argument {v[1]})"
                self.add("uncallable-arg", v[1], self.at(node, scope), path, f"calls {written}{given} — {self.why}")
        for slot, arg in [*enumerate(node.args), *((kw.arg, kw.value) for kw in node.keywords)]:
            for v in self.resolve(arg, scope):
                if v[0] == "param" and not v[2]:
                    self.pass_on(v[1], slot, funcs, node, scope, path, written)

    def pass_on(self, given, slot, funcs, node, scope, path, written):
        """The uncallable argument ``given`` is handed to ``funcs``: follow it into the student's functions (it
        becomes uncallable there too); anywhere else it may be called, which is a finding."""
        for f in funcs:
            target, offset = (f[1], int(f[0] == "method")) if f[0] in ("scope", "method") else (None, 0)
            if target is not None and target.kind == "class":
                inits = [b.payload for b in target.names.get("__init__", ()) if b.kind == "def"]
                target, offset = (inits[0], 1) if inits else (None, 0)
                if target is None:
                    continue
            if target is not None:
                params = target.params[offset:]
                name = slot if isinstance(slot, str) else params[slot] if isinstance(slot, int) and slot < len(
                    params) else None
                for p in [name] if name in _params(target) else target.varargs:
                    if p not in self.taint.setdefault(target, {}):
                        self.taint[target][p], self.grew = given, True
            elif f[0] != "param" and not (f[0] == "ext" and f[1] in SAFE_PASS):
                self.add("uncallable-arg", given, self.at(node, scope), path,
                         f"passes {given} to {written}, which may call it — {self.why}")

    # -- findings -------------------------------------------------------------------------------------------

    def report(self, values, node, scope, path, written, callee):
        verb = "calls" if callee else "uses"
        for v in values:
            if v[0] in ("scope", "method", "obj"):   # the student's own code: follow it
                hop = (verb, v[1].name, v[1].cell, getattr(v[1].node, "lineno", 1))
                self.queue.append(("scope", v[1], path + (hop,)))
            elif v[0] in ("ext", "inst"):
                kind = self.classify(v[1])
                shown = written if written == v[1] else f"{written} ({'a ' if v[0] == 'inst' else ''}{v[1]})"
                why = {"dynamic": f", {_MANUAL}", "file": f" — {FILE.why}"}.get(kind, f" — {self.why}")
                if kind:
                    self.add(kind, v[1], self.at(node, scope), path, f"{verb} {shown}{why}")

    def classify(self, qualname: str) -> str | None:
        names = equivalents(qualname)
        if any(FILE.forbids(n) for n in names):
            return "file"
        if any(DYNAMIC.forbids(n) for n in names):
            return "dynamic"
        if any(self.allowed.forbids(n) for n in names) or any(  # a namespace on the way to an allowed name
                a.startswith(n + ".") for n in names for a in self.rule.allowed):
            return None
        return "forbidden" if any(self.rule.forbids(n) for n in names) else None

    def method_by_name(self, attr, node, scope, path, written):
        """``obj.attr`` on an object of unknown type: match ``*.attr`` and ``pkg.Class.attr`` patterns by name."""
        for p in ("*." + attr,) + self.rule.forbidden:
            owner, _, last = p.rpartition(".")
            if last == attr and (owner == "*" or owner.rpartition(".")[2][:1].isupper()) and self.rule.forbids(p):
                self.add("forbidden", p, self.at(node, scope), path, f"calls {written} ({p}) — {self.why}")
                break
        if attr in ("read_text", "read_bytes"):
            self.add("file", "pathlib.Path." + attr, self.at(node, scope), path, f"calls {written} — {FILE.why}")

    def add(self, kind, name, where, path, what, message=None):
        cell, line = where
        for f in self.findings:   # one finding per thing (per line for dynamic access and files): the first is
            if f.kind == kind and (f.name == name or name.startswith(f.name + ".") or f.name.startswith(name + ".")
                                   or kind in ("dynamic", "file") and (f.cell, f.line) == (cell, line)):
                return            # the most direct
        if message is None and path:
            hops = ", which ".join(f"{verb} {hop}" for verb, hop, _, _ in path)
            message = f"{self.function} {hops} (cell {cell}, line {line}), which {what}"
        elif message is None:
            message = f"{self.function}, line {line}: {what}"
        self.findings.append(Finding(self.function, cell, line, name, kind, message))

    def at(self, node, scope):
        return scope.cell, getattr(node, "lineno", 1)

    def undefined_names(self):
        """A reached name no cell binds, where some cell can create names dynamically (exec, setattr, ``%run``, a
        cell too long to parse): the answer's real code may be there."""
        sources = dynamic_sources(self.p, self.cells, self.undefined) if self.undefined else []
        if sources:
            name, (cell, line, what) = min(self.undefined), sources[0]
            self.add("dynamic", f"undefined name {name}", (cell, line), (), "", f"{self.function} uses {name}, which "
                     f"no cell defines; cell {cell}, line {line} may define it ({what}): {_PERSON}")


def _params(scope: Scope) -> set[str]:
    return {name for name, bs in scope.names.items() if any(b.kind == "param" and b.scope is scope for b in bs)}
