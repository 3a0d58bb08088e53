"""Record the forbidden calls a graded function makes while it runs (the dynamic half of a :class:`~.rules.Rule`).

::

    with recording(spec.rule, case.args, case.kwargs, fn=spec.reference) as rec:
        out = student_fn(*case.args, **case.kwargs)
    exported.update(rec.export(f"c{i}.guard."))   # the judge reads it back with CallRecord.from_export

How it sees calls (cost: a Python callback per call, and the mode's dispatch per torch call, microseconds each):
``sys.setprofile`` (``threading.setprofile`` for threads started meanwhile) gets every Python frame however it was
reached (a lambda in a dict, ``exec``'d text) and every C function Python code calls (``getattr(torch, "lstm" +
"_cell")``); a :class:`torch.overrides.TorchFunctionMode` gets the torch functions C code calls (``map``,
``functools.partial``, ``torch.ops.aten``). Objects are matched by identity: entering builds, once per rule, an
index from ``id(obj)`` and ``obj.__code__`` to the public name the rule uses, resolving its patterns over the loaded
namespaces of :data:`ROOTS`, rnnkit's submodules (never ``rnnkit.grading``) and any module a pattern names. A class
counts when a method of its own body runs, or its inherited ``__init__``/``forward`` on an instance of it; rnnkit code
loaded later is named by its file.

Only the student's calls count: the frame making the call must be the student's (outside torch's and rnnkit's
folders: a notebook cell, ``exec``'d text, the student's own Module; or ``rnnkit.grading``, whose export calls the
answer), looking through ``Module.__call__`` and wrappers. What torch and rnnkit call inside themselves is not
recorded (``torch.no_grad()`` calls ``torch.set_grad_enabled``; a handed-out ``rnnkit.data.pad_batch`` calls helpers).

An object with several names is recorded when one matches a forbidden pattern, none an allowed one, and either the
forbidden entry is that exact name or *every* name it has is forbidden: ``torch._VF.*`` does not catch ``torch.tanh``
(the same object as ``torch._VF.tanh``), ``torch.nn.functional.*`` not ``F.linear`` (``torch._C._nn.linear``), while
``rnnkit.cells.lstm_cell`` also catches ``rnnkit.lstm_cell``. Method forms are objects of their own:
``x.log_softmax(1)`` is recorded when the rule names ``torch.Tensor.log_softmax``, not ``torch.log_softmax``.

Not seen (the static check reads these names, or flags the access they need): a forbidden function handed to a
library routine that calls it (``torch.vmap(torch.lstm_cell)``), code compiled under a torch or rnnkit file name, C
calling C with torch functions disabled, a copy of a given module (``copy.deepcopy(cell)``: forbid its class too),
``_thread`` threads, work after the call returned, and a kernel whose ``sys``/``torch`` or whose record (reached
through frames or ``gc``) the student changed: the record lives in the student's kernel. Removing the profiler or
the mode during the call (``sys.setprofile(None)``, popping the mode stack) makes the record incomplete.
"""
from __future__ import annotations

import fnmatch
import gc
import inspect
import os
import re
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from .rules import Rule

GUARD_FORMAT = "rnnkit-guard-1"
TAMPERED = "<the guard was removed or replaced>"  # not a name: only ever marks complete=False

# the namespaces every rule is resolved against, in the order their names are preferred when reporting; one set for
# every rule (so one name table serves them all), a rule naming another module adds it
ROOTS = ("torch", "torch.Tensor", "torch.nn", "torch.nn.functional", "torch.autograd", "torch.nn.utils", "torch._VF",
         "rnnkit", "torch.special", "torch.linalg", "torch.fft", "torch.func", "torch.distributions", "torch.testing",
         "torch._C")
_RNNKIT_DIR = str(Path(__file__).resolve().parents[1]) + os.sep
_GRADING_DIR = str(Path(__file__).resolve().parent) + os.sep
# the model a notebook hands out, which the cases pass to the student's function: library code, like rnnkit's
_HANDOUT = _GRADING_DIR + "specs" + os.sep + "_handout.py"
_LIBRARY_DIRS = (str(Path(torch.__file__).resolve().parent) + os.sep, _RNNKIT_DIR)
_real_setprofile = sys.setprofile  # taken when grading is imported, before any student code could replace it
_real_getprofile = sys.getprofile


@dataclass
class CallRecord:
    """What one call of a graded function did: the forbidden things it called, in first-seen order."""

    calls: list[str] = field(default_factory=list)
    complete: bool = False  # True once the guard ran, and it stayed installed for the whole call

    def export(self, prefix: str) -> dict[str, np.ndarray]:
        """Plain arrays (unicode, bool) for an export: ``{prefix}calls``, ``{prefix}complete``, ``{prefix}format``."""
        return {f"{prefix}calls": np.array(self.calls, dtype=np.str_).reshape(len(self.calls)),
                f"{prefix}complete": np.array(bool(self.complete), dtype=np.bool_),
                f"{prefix}format": np.array(GUARD_FORMAT)}

    @staticmethod
    def from_export(exported: dict, prefix: str) -> CallRecord | None:
        """The record stored under ``prefix``, or None when it is missing or malformed (the judge then fails)."""
        calls, complete, fmt = (exported.get(f"{prefix}{k}") for k in ("calls", "complete", "format"))
        if not (isinstance(calls, np.ndarray) and isinstance(complete, np.ndarray) and isinstance(fmt, np.ndarray)):
            return None
        if (fmt.dtype.kind != "U" or fmt.ndim != 0 or str(fmt) != GUARD_FORMAT or calls.ndim != 1
                or calls.dtype.kind != "U" or complete.dtype != np.bool_ or complete.ndim != 0):
            return None
        return CallRecord([str(c) for c in calls], bool(complete))


# ---------------------------------------------------------------------------------------------------- the index
def _is_pattern(p: str) -> bool:
    return any(ch in p for ch in "*?[")


def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """The test of :meth:`Rule.forbids` for one side, fast over thousands of names: a literal entry matches itself
    and the names under it (set lookups of the name's prefixes), the fnmatch patterns make one small regex."""
    literal = {p for p in patterns if not _is_pattern(p)}
    wild = [fnmatch.translate(p) for p in patterns if _is_pattern(p)]
    regex = re.compile("|".join(wild)).fullmatch if wild else (lambda name: None)
    heads = tuple(re.split(r"[*?\[]", p)[0] for p in patterns)  # every match starts with one of these

    def matches(name: str) -> bool:
        if not name.startswith(heads):
            return False
        if regex(name):
            return True
        dot = name.find(".")
        while dot != -1:
            if name[:dot] in literal:
                return True
            dot = name.find(".", dot + 1)
        return name in literal

    return matches


def _resolve(dotted: str) -> Any:
    """The loaded module or class called ``dotted``, or None. Nothing is imported: a module nobody loaded has not
    been called (rnnkit code loaded later is caught by its file, see _Index.code_entries)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        obj = sys.modules.get(".".join(parts[:cut]))
        if obj is not None:
            for attr in parts[cut:]:
                obj = getattr(obj, attr, None)
            return obj
    return None


_MEMBERS: dict[str, tuple] = {}  # per namespace, once it is loaded


def _members(root: str) -> tuple[tuple[str, Any], ...]:
    """(attribute, object) pairs of one namespace: callables that belong to its package (not ``typing.List``)."""
    if root in _MEMBERS:
        return _MEMBERS[root]
    if root == "torch._VF":  # a module whose __getattr__ forwards to this class
        obj, top = torch._C._VariableFunctions, "torch"
    else:
        obj, top = _resolve(root), root.split(".")[0]
    if isinstance(obj, types.ModuleType):
        items = list(vars(obj).items())
    elif isinstance(obj, type):
        items = [(a, getattr(obj, a, None)) for a in dir(obj)]
    else:
        return ()
    kept = []
    for attr, value in items:
        home = getattr(value, "__module__", None)
        if attr.startswith("__") or not callable(value) or isinstance(value, types.ModuleType):
            continue
        if not (isinstance(home, str) and (home.split(".")[0] != top or home.startswith("rnnkit.grading"))):
            kept.append((attr, value))
    _MEMBERS[root] = tuple(kept)
    return _MEMBERS[root]


def _roots(rule: Rule) -> tuple[str, ...]:
    """ROOTS, then loaded rnnkit submodules, then other modules the rule's patterns name."""
    extra = [m for m in list(sys.modules) if m.startswith("rnnkit.") and not m.startswith("rnnkit.grading")]
    for p in rule.forbidden + rule.allowed:
        parts = p.split(".")
        fixed = parts[:next((i for i, x in enumerate(parts) if _is_pattern(x)), len(parts))]
        for head in (".".join(fixed), ".".join(fixed[:-1])):
            if head and not head.startswith("rnnkit.grading") and isinstance(_resolve(head), types.ModuleType):
                extra.append(head)
    return tuple(dict.fromkeys(ROOTS + tuple(sorted(set(extra)))))


def _code(function: Any) -> types.CodeType | None:
    """The code a call of ``function`` runs: a decorator's wrapper code is shared by everything it decorates
    (``torch.no_grad()``), so look through ``__wrapped__`` to the function's own."""
    try:
        function = inspect.unwrap(getattr(function, "__func__", function))  # staticmethod, classmethod, wraps
    except ValueError:
        return None
    code = getattr(function, "__code__", None)
    return code if isinstance(code, types.CodeType) else None


def _codes(obj: Any) -> list[tuple[types.CodeType, type | None]]:
    """Code objects whose frames mean "obj was called": a function's own, or for a class the methods in its own
    body (no check needed) and its inherited ``__init__``/``forward`` (counted only for instances of it)."""
    if not isinstance(obj, type):
        return [(code, None) for code in [_code(obj)] if code is not None]
    own = [(code, None) for code in map(_code, vars(obj).values()) if code is not None]
    inherited = [(_code(getattr(obj, m, None)), obj) for m in ("__init__", "forward") if m not in vars(obj)]
    return own + [(code, cls) for code, cls in inherited if code is not None]


@lru_cache(maxsize=4)
def _name_table(roots: tuple[str, ...]) -> dict[int, tuple[Any, list[str]]]:
    """``id(obj) -> (obj, its public names)`` over ``roots``, in root order. An object a namespace imported from
    outside itself also keeps the name where it is defined: ``F.handle_torch_function`` is
    ``torch.overrides.handle_torch_function``, which ``torch.nn.functional.*`` leaves alone."""
    table: dict[int, tuple[Any, list[str]]] = {}
    found_in: dict[int, list[str]] = {}
    for root in roots:
        for attr, obj in _members(root):
            table.setdefault(id(obj), (obj, []))[1].append(f"{root}.{attr}")
            found_in.setdefault(id(obj), []).append(root)
    for key, (obj, names) in table.items():
        home = getattr(obj, "__module__", None)
        if isinstance(home, str) and not any(home == r or home.startswith(r + ".") for r in found_in[key]):
            names.append(f"{home}.{obj.__qualname__}")
    return table


class _Index:
    """The identity index of one rule: what counts as forbidden, under the name the rule uses for it."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.by_id: dict[int, str] = {}
        self.by_code: dict[types.CodeType, tuple] = {}  # code -> ((name, class or None), ...); () = not forbidden
        self.transparent = {*_TRANSPARENT, _Mode.__torch_function__.__code__}  # + wrappers of forbidden functions
        self.keep: list = []  # the indexed objects stay alive, so their ids stay theirs
        allowed, forbidden = _matcher(rule.allowed), _matcher(rule.forbidden)
        literal = {p for p in rule.forbidden if not _is_pattern(p)}
        for obj, names in _name_table(_roots(rule)).values():
            if any(allowed(n) for n in names):
                for code, _ in _codes(obj):  # known and allowed: code_entries must not name it from its file
                    self.by_code.setdefault(code, ())
                continue
            bad = [n for n in names if forbidden(n)]
            exact = [n for n in bad if n in literal]
            if bad and (exact or len(bad) == len(names)):
                self._add(obj, (exact or bad)[0])

    def _add(self, obj: Any, name: str) -> None:
        self.keep.append(obj)
        self.by_id[id(obj)] = name
        wrapper = getattr(obj, "__code__", None)
        if isinstance(wrapper, types.CodeType) and wrapper is not _code(obj):
            self.transparent.add(wrapper)  # clip_grad_norm_ is a @_no_grad wrapper around clip_grad_norm_
        for code, cls in _codes(obj):
            self.by_code[code] = self.by_code.get(code, ()) + ((name, cls),)
        if isinstance(obj, types.BuiltinFunctionType) and name.startswith("torch."):
            try:
                packet = getattr(torch.ops.aten, name.rsplit(".", 1)[1])  # torch.ops.aten.lstm_cell(...)
            except (AttributeError, RuntimeError):
                packet = None
            if isinstance(packet, torch._ops.OpOverloadPacket):
                for op in [packet, packet._op] + [getattr(packet, o) for o in packet.overloads()]:
                    self.keep.append(op)
                    self.by_id[id(op)] = name

    def code_entries(self, code: types.CodeType) -> tuple:
        """by_code, extended on first sight by rnnkit code loaded after the index was built."""
        entries = self.by_code.get(code)
        if entries is None:
            entries = ()
            path = code.co_filename
            if path.startswith(_RNNKIT_DIR) and not path.startswith(_GRADING_DIR) and code.co_name != "<module>":
                module = "rnnkit." + path[len(_RNNKIT_DIR):-len(".py")].replace(os.sep, ".")
                name = f"{module.removesuffix('.__init__')}.{getattr(code, 'co_qualname', code.co_name)}"
                if self.rule.forbids(name):
                    entries = ((name, None),)
            self.by_code[code] = entries
        return entries


@lru_cache(maxsize=64)
def _index(rule: Rule) -> _Index:
    paused = gc.isenabled()
    gc.disable()  # thousands of small lists: a collection over torch's objects would cost more than the build
    try:
        return _Index(rule)
    finally:
        if paused:
            gc.enable()


def _watched_setprofile(function):
    """Stands in for ``sys.setprofile`` while a guard runs: its frame tells the guard the profiler is being changed."""
    return _real_setprofile(function)


# frames between the student's call and the forbidden code it reaches: Module.__call__, torch.ops.aten.x(...)
_TRANSPARENT = {torch.nn.Module._wrapped_call_impl.__code__, torch.nn.Module._call_impl.__code__,
                torch._ops.OpOverloadPacket.__call__.__code__, torch._ops.OpOverload.__call__.__code__}

# calls that remove or bypass a hook; seeing one makes the record incomplete
_TAMPER_CODES = {_watched_setprofile.__code__, threading.setprofile.__code__}
_TAMPER_IDS = {id(_real_setprofile)}  # (torch pops and pushes the mode stack itself while dispatching: checked on exit)


# ---------------------------------------------------------------------------------------------------- the guard
class _Mode(TorchFunctionMode):
    """Records the torch functions that C code calls; its own frame is transparent (see _Guard.student_called)."""

    def __init__(self, guard: _Guard) -> None:
        super().__init__()
        self.guard = guard

    def __torch_function__(self, func, types, args=(), kwargs=None):
        guard = self.guard
        name = guard.by_id.get(id(func)) if guard.active else None
        # Python functions (F.log_softmax) reach the profiler themselves; a C function reached from C code (map,
        # functools.partial) is seen here only, called by the nearest Python frame
        if name is not None and not hasattr(func, "__code__") and guard.student_called(sys._getframe(1)):
            guard.record(name)
        return func(*args, **(kwargs or {}))


class _Guard:
    def __init__(self, index: _Index, uncallable: dict[str, Any]) -> None:
        self.index, self.result, self.active = index, CallRecord(complete=True), False
        self.arg_ids: dict[int, str] = {}
        self.arg_codes: dict[types.CodeType, tuple] = {}
        for arg, obj in uncallable.items():  # "cell()": the given module's forward, or the given function
            label = f"{arg}()"
            self.arg_ids[id(obj)] = label
            for target, owner in ((getattr(type(obj), "forward", None), obj), (getattr(obj, "__func__", obj), None),
                                  (getattr(type(obj), "__call__", None), obj)):  # noqa: B004 (the method, for its code)
                code = getattr(target, "__code__", None)
                if isinstance(code, types.CodeType):
                    self.arg_codes[code] = self.arg_codes.get(code, ()) + ((label, owner),)
        self.by_id = {**index.by_id, **self.arg_ids}
        self.previous: Callable | None = None
        self.profile = cast(Any, self._hook())  # a function, which the line below gives an attribute
        self.profile.guard = self  # so a guard entered inside this one finds it

    def record(self, name: str) -> None:
        if name == TAMPERED:
            self.result.complete = False
        elif name not in self.result.calls:
            self.result.calls.append(name)

    def student_called(self, caller) -> bool:
        """Whether ``caller`` (the frame making a call) is the student's code rather than the libraries': what
        torch and rnnkit call inside themselves is not the student's doing (``torch.no_grad()`` calls
        ``torch.set_grad_enabled``). rnnkit.grading is on the student's side: the export calling
        ``lstm_cell_forward = torch.lstm_cell`` is that answer's call. Module.__call__, decorators' wrappers and the
        mode are looked through."""
        transparent = self.index.transparent
        while caller is not None and caller.f_code in transparent:
            caller = caller.f_back
        path = caller.f_code.co_filename if caller is not None else ""
        if path == _HANDOUT:
            return False
        return not path.startswith(_LIBRARY_DIRS) or path.startswith(_GRADING_DIR)

    def _hit(self, frame, entries: tuple, identity: bool) -> None:
        for name, check in entries:
            if check is not None:
                code = frame.f_code
                first = frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None
                if not (first is check if identity else isinstance(first, check)):
                    continue
            self.record(name)
            return

    def _hook(self) -> Callable:
        """The profile function: a closure over plain locals, since it runs on every call the student makes."""
        guard, by_id = self, self.by_id
        code_entries, arg_codes, student_called = self.index.code_entries, self.arg_codes, self.student_called
        record, hit = self.record, self._hit

        def profile(frame, event, arg) -> None:
            if not guard.active:
                return
            if guard.previous is not None:  # a guard entered around this one records the same events
                guard.previous(frame, event, arg)
            try:
                if event == "c_call":
                    key = id(arg)
                    if key in _TAMPER_IDS:
                        record(TAMPERED)
                    name = by_id.get(key)  # (x.log_softmax(1) calls a new bound method: the mode sees that one)
                    if name is not None and student_called(frame):
                        record(name)
                elif event == "call":
                    code = frame.f_code
                    if code in _TAMPER_CODES:
                        record(TAMPERED)
                    entries = code_entries(code)
                    if entries and student_called(frame.f_back):
                        hit(frame, entries, identity=False)
                    entries = arg_codes.get(code, ())
                    if entries and student_called(frame.f_back):
                        hit(frame, entries, identity=True)
            except Exception:  # noqa: BLE001 — a hook that raises would be removed by Python and change the call
                record(TAMPERED)

        return profile


def _bind(rule: Rule, fn: Callable | None, args: tuple, kwargs: dict) -> dict[str, Any]:
    if not rule.uncallable_args:
        return {}
    if fn is None:
        raise TypeError(f"recording: the rule forbids calling the arguments {rule.uncallable_args}; pass fn= "
                        "(a callable with the graded function's signature, e.g. the spec's reference)")
    bound = inspect.signature(fn).bind_partial(*args, **kwargs).arguments
    return {name: bound[name] for name in rule.uncallable_args if name in bound}


@contextmanager
def recording(rule: Rule, args: tuple = (), kwargs: dict | None = None, *,
              fn: Callable | None = None) -> Iterator[CallRecord]:
    """Record, into the yielded :class:`CallRecord`, what ``rule`` forbids while the ``with`` body runs (one call
    of a graded function with ``args``/``kwargs``). ``fn`` names the parameters for ``rule.uncallable_args``
    (pass the spec's reference: the student may rename theirs). Everything changed is restored on exit."""
    if not isinstance(rule, Rule):
        raise TypeError(f"recording expected a Rule, got {type(rule).__name__}")
    guard = _Guard(_index(rule), _bind(rule, fn, tuple(args), dict(kwargs or {})))
    mode = _Mode(guard)
    saved_profile, saved_thread_profile = _real_getprofile(), threading.getprofile()
    saved_setprofile, saved_stack = sys.setprofile, torch.overrides._get_current_function_mode_stack()
    saved_torch_function = torch._C._is_torch_function_enabled()
    outer = getattr(saved_profile, "guard", None)
    outer = outer if isinstance(outer, _Guard) and outer.active else None
    if outer is not None:  # nested: the outer guard records our events, but must not take our setup for tampering
        guard.previous, outer.active = saved_profile, False
    try:
        torch._C._push_on_torch_function_stack(mode)
        threading.setprofile(guard.profile)
        sys.setprofile = _watched_setprofile
        _real_setprofile(guard.profile)
        guard.active = True
        if outer is not None:
            outer.active = True
        yield guard.result
    finally:
        guard.active = False
        if outer is not None:
            outer.active = False
        intact = (_real_getprofile() is guard.profile and sys.setprofile is _watched_setprofile
                  and torch.overrides._get_current_function_mode_stack() == saved_stack + [mode]
                  and torch._C._is_torch_function_enabled() == saved_torch_function)
        _real_setprofile(saved_profile)
        sys.setprofile = saved_setprofile
        threading.setprofile(saved_thread_profile)
        while torch._C._len_torch_function_stack():
            torch._C._pop_torch_function_stack()
        for m in saved_stack:
            torch._C._push_on_torch_function_stack(m)
        if outer is not None:
            outer.active = True
        if not intact:
            guard.result.complete = False
