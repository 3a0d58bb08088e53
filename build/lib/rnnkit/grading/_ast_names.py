"""Names for :mod:`static_check`: the other names of an object (``torch._VF.lstm_cell`` is ``torch.lstm_cell``),
the tables of dynamic access and file reads, and :class:`Resolver`, which says what an expression of the student's
code may denote, from the bindings :mod:`_ast_scopes` recorded (flow-insensitively: everything a name is ever
bound to).
"""
from __future__ import annotations

import ast
import builtins
import re
import sys
from collections import deque
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._ast_scopes import Binding, Program, Scope
from .rules import Rule

# other public or private names of the same object, so a rule names each thing once
_REWRITE_SOURCES = [
    (r"torch\.nn\.modules(?:\.[a-z_]\w*)?\.([A-Z]\w*(?:\..*)?)", ["torch.nn.{0}"]),
    (r"torch\.(?:_VF|_C\._VariableFunctions(?:Class)?)\.(\w+)", ["torch.{0}", "torch._VF.{0}",
                                                                 "torch._C._VariableFunctions.{0}"]),
    (r"torch\.ops\.aten\.(\w+)(?:\.\w+)?", ["torch.{0}", "torch._VF.{0}"]),
    (r"torch\._C\._nn\.(\w+)", ["torch.nn.functional.{0}"]),
    (r"torch\.(?:functional|serialization|autograd\.grad_mode)\.(\w+)", ["torch.{0}"]),
    (r"torch\.(?:_C\._?TensorBase|_tensor\.Tensor)\.(\w+)", ["torch.Tensor.{0}"]),
    (r"torch\.nn\.utils\.clip_grad\.(\w+)", ["torch.nn.utils.{0}"]),
    (r"numpy\.lib\.npyio\.(\w+)", ["numpy.{0}"]),
    (r"pathlib\.(?:Pure|Posix|Windows|PurePosix|PureWindows)Path\.(\w+)", ["pathlib.Path.{0}"]),
    (r"(?:io|_io)\.open", ["builtins.open"]),
]
_REWRITES: list[tuple[re.Pattern[str], list[str]]] = [(re.compile(p), t) for p, t in _REWRITE_SOURCES]
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]   # the installed rnnkit: parsed, never imported, to find aliases


def equivalents(qualname: str) -> set[str]:
    """``qualname`` and the other names of the same object: ``torch.nn.modules.rnn.LSTMCell`` -> also
    ``torch.nn.LSTMCell``; ``torch._VF.lstm_cell`` -> also ``torch.lstm_cell``; ``rnnkit.lstm_cell`` -> also
    ``rnnkit.cells.lstm_cell`` (read from rnnkit's own imports)."""
    out = {qualname}
    if qualname.split(".")[0] == "rnnkit":
        origin = _rnnkit_origin(qualname)  # reached through rnnkit but defined elsewhere: only the origin counts
        out = {qualname, origin} if origin.split(".")[0] == "rnnkit" else {origin}
    for name in list(out):
        for pattern, targets in _REWRITES:
            m = pattern.fullmatch(name)
            if m:
                out.update(t.format(*m.groups()) for t in targets)
    return out


@lru_cache(maxsize=64)
def _rnnkit_module(module: str) -> tuple[dict[str, str], tuple[str, ...]] | None:
    """(name -> qualified origin of each `from .x import y` at the top of the module, its public names), or None
    when ``module`` is not an rnnkit module."""
    base = _PACKAGE_ROOT.joinpath(*module.split(".")[1:])
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file() and module.split(".")[0] == "rnnkit":
            break
    else:
        return None
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    origins, public = {}, []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            source = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]) if node.level else ""
            source = ".".join(p for p in (source, node.module or "") if p)
            for a in node.names:
                origins[a.asname or a.name] = f"{source}.{a.name}"
        elif isinstance(node, ast.Import):
            origins.update((a.asname or a.name.split(".")[0], a.name if a.asname else a.name.split(".")[0])
                           for a in node.names)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            try:
                return origins, tuple(ast.literal_eval(node.value))
            except ValueError:
                pass
        public += [getattr(node, "name", "")] + [getattr(t, "id", "") for t in getattr(node, "targets", ())]
    return origins, tuple(n for n in public + list(origins) if n and not n.startswith("_"))


def _rnnkit_origin(qualname: str, depth: int = 0) -> str:
    parts = qualname.split(".")
    for k in range(len(parts) - 1, 0, -1):
        info = _rnnkit_module(".".join(parts[:k]))
        if info is not None:
            origin = info[0].get(parts[k])
            if origin is None or depth > 8:
                return qualname
            return _rnnkit_origin(".".join([origin] + parts[k + 1:]), depth + 1)
    return qualname


def star_exports(module: str, name: str, exact: bool = False) -> bool:
    """Whether ``from module import *`` binds ``name``: known for rnnkit; for other modules, ``not exact``."""
    info = _rnnkit_module(module) if module.split(".")[0] == "rnnkit" else None
    return name in info[1] if info is not None else not exact


# reached from an answer, these cannot be followed statically: the check fails and a person looks
DYNAMIC = Rule(forbidden=(
    "builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__", "builtins.globals",
    "builtins.locals", "builtins.vars", "builtins.breakpoint", "builtins.getattr", "builtins.setattr",
    "builtins.delattr", "importlib", "sys.modules", "sys._getframe", "sys.settrace", "sys.setprofile", "ctypes",
    "_ctypes", "pickle", "_pickle", "marshal", "dill", "cloudpickle", "joblib", "shelve", "copyreg",
    "inspect.currentframe", "inspect.stack", "inspect.trace", "inspect.getouterframes", "inspect.getinnerframes",
    "inspect.getmembers", "inspect.getattr_static", "operator.attrgetter", "operator.methodcaller",
    "types.FunctionType", "types.CodeType", "types.LambdaType", "types.ModuleType", "runpy", "code", "codeop",
    "subprocess", "os.system", "os.popen", "os.exec*", "os.spawn*", "os.posix_spawn*", "os.fork", "pty",
    "multiprocessing", "gc.get_objects", "gc.get_referrers", "gc.get_referents", "IPython.get_ipython",
    "IPython._history", "IPython.core", "IPython.embed", "IPython.start_*", "IPython.extensions", "ipykernel",
    "pydoc.locate", "torch.hub", "torch.package", "torch.jit.load", "torch.ops.load_library",
    "torch.utils.cpp_extension", "builtins.__builtins__", "builtins.__loader__", "builtins.__spec__",
    "builtins.__build_class__"),
    why="static checking cannot follow it, so an instructor will look at this answer")
# reading files or the network: the stored expected values must not be read by an answer
FILE = Rule(forbidden=(
    "builtins.open", "io.FileIO", "os.open", "os.read", "os.fdopen", "codecs.open", "pathlib.Path.read_*",
    "pathlib.Path.open", "importlib.resources", "importlib_resources", "pkgutil.get_data", "numpy.load",
    "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile", "numpy.memmap", "numpy.lib.format", "torch.load",
    "torch.from_file", "torch.UntypedStorage.from_file", "zipfile", "tarfile", "sqlite3", "pandas.read_*",
    "json.load", "linecache", "fileinput", "urllib", "requests", "http", "socket", "rnnkit.grading"),
    why="an answer may not read files (the grader's expected values are stored in files)")
# attributes that reach namespaces, frames or code objects, whatever object they are read from
DYNAMIC_ATTRS = frozenset({
    "__dict__", "__getattribute__", "__getattr__", "__setattr__", "__delattr__", "__builtins__", "__globals__",
    "__code__", "__closure__", "__subclasses__", "__import__", "__loader__", "__spec__", "__reduce__",
    "__reduce_ex__", "f_globals", "f_locals", "f_back", "f_builtins", "gi_frame", "cr_frame", "ag_frame",
    "tb_frame"})
# names a kernel defines that no cell does: `get_ipython().ev(...)` evaluates a string, `In` holds cell sources
IPYTHON_NAMES = {"display": "IPython.display.display", "get_ipython": "IPython.get_ipython",
                 **{n: "IPython._history" for n in ("In", "Out", "_ih", "_oh", "_dh", "_i", "_ii", "_iii")}}
# an uncallable argument may be handed to these: they never call it
SAFE_PASS = frozenset({"builtins." + n for n in ("isinstance", "issubclass", "type", "print", "repr", "str", "id",
                                                 "hasattr", "getattr", "len", "dir", "hash", "format")})
# calling these attributes of a module runs its forward
CALL_ATTRS = frozenset({"__call__", "forward", "_call_impl", "_wrapped_call_impl", "_slow_forward"})


def dynamic_sources(program: Program, cells: Sequence[str], names: set[str]) -> list[tuple[int, int, str]]:
    """(cell, line, what) for every call that can create ``names`` although no cell binds them: exec, setattr,
    ``%run``..., and cells the kernel may have run but that were not parsed here, where they mention one (a cell
    that does not parse defines nothing)."""
    found = []
    mentions = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(names))) + r")\b")
    for i, module in enumerate(program.modules):
        if module is None:
            if i in program.unsure and mentions.search(cells[i]):
                found.append((i, 1, "a cell too long or too deeply nested to check"))
            continue
        harmless = set()   # `!ls`, `%matplotlib inline`: the magics that bind no names
        for node in ast.walk(module):
            f = node.func if isinstance(node, ast.Call) else None   # only a call has a func
            if isinstance(node, ast.Call) and isinstance(f, ast.Attribute) and isinstance(f.value, ast.Call) and (
                    f.attr in ("system", "getoutput") or f.attr in ("run_line_magic", "run_cell_magic") and node.args
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value in _HARMLESS_MAGICS):
                harmless.add(id(f.value))
        for node in ast.walk(module):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = getattr(f, "id", None) or getattr(f, "attr", None)
            if name in ("exec", "eval", "__import__", "setattr", "globals", "vars", "locals", "get_ipython",
                        "import_module") and id(node) not in harmless:
                found.append((i, node.lineno, "an IPython magic" if name == "get_ipython" else name))
    return found


_HARMLESS_MAGICS = frozenset({"matplotlib", "time", "timeit", "precision", "pprint", "xmode", "who", "whos",
                              "pip", "conda", "env", "pwd", "ls", "cd", "autosave", "config", "capture"})


# a name no given cell binds: most likely the notebook's usual import of it (the integrator may leave out the
# instructor's locked cells), so it is not reported as undefined
CONVENTIONAL = {"np": "numpy", "F": "torch.nn.functional", "nn": "torch.nn", "plt": "matplotlib.pyplot",
                "grading": "rnnkit.grading"}
_MODULES = frozenset({"torch", "numpy", "rnnkit", "matplotlib", "scipy", "pandas", "nbformat", "IPython"})


UNKNOWN = ("unknown",)
_STEPS = 400_000   # resolution and walking steps per check: past this the answer is too complex to check


class TooComplex(Exception):
    pass


class Resolver:
    """Values are tuples: ("ext", qualified name), ("inst", class name) for an instance of a library class,
    ("scope", Scope) for the student's function, lambda or class, ("obj", class Scope) for an instance of it,
    ("method", function Scope) for a method bound to one, ("param", name, attributes) for an argument that must not
    be called (and attributes read from it), and UNKNOWN."""

    def __init__(self, program: Program):
        self.p = program
        self.taint: dict[Scope, dict[str, str]] = {}   # scope -> {parameter: the uncallable argument it receives}
        self.memo: dict = {}
        self.undefined: set[str] = set()
        self.queue: deque[tuple[str, Any, tuple]] = deque()   # code found while resolving that must be walked too
        self.steps = 0

    def tick(self):
        self.steps += 1
        if self.steps > _STEPS:
            raise TooComplex

    def once(self, key, compute):
        """``compute()`` memoised; while it runs the key reads as empty, so cycles end there."""
        if key not in self.memo:
            self.memo[key] = set()
            self.memo[key] = compute()
        return self.memo[key]

    def lookup(self, name: str, scope: Scope) -> tuple[list[Binding], set]:
        """The bindings ``name`` may mean in ``scope``, or the values of a name no cell binds."""
        s = scope
        if name not in s.declared_global:
            while s.kind != "module":
                if (s is scope or s.kind != "class") and name in s.names and name not in s.declared_nonlocal:
                    return s.names[name], set()
                assert s.parent is not None   # only a module scope has no parent, and the loop stops there
                s = s.parent
        if name in self.p.globals:   # a star import that surely binds it may come after the cell that does
            return self.p.globals[name] + self.star_bindings(name, exact=True), set()
        if name in IPYTHON_NAMES:
            return [], {("ext", IPYTHON_NAMES[name])}
        values = {("ext", b.payload) for b in self.star_bindings(name, exact=False)}
        if hasattr(builtins, name) or name == "__builtins__":
            values.add(("ext", "builtins." + name))
        if not values:   # bound by a cell not given, or by nothing: most likely the module of that name
            if name not in CONVENTIONAL and name not in _MODULES and name not in sys.stdlib_module_names:
                self.undefined.add(name)
            values = {("ext", CONVENTIONAL.get(name, name))}
        return [], values

    def star_bindings(self, name: str, exact: bool) -> list[Binding]:
        """What ``from M import *`` binds ``name`` to, where it may (``exact``: where it surely does)."""
        return [Binding(name, "ext", f"{s.payload}.{name}", s.scope, s.node) for s in self.p.stars
                if isinstance(s.payload, str) and star_exports(s.payload, name, exact)]

    def binding_values(self, b: Binding) -> set:
        if b.kind == "expr" and isinstance(b.payload, ast.AST):
            expr = b.payload
            return self.once(("binding", id(b)), lambda: self.resolve(expr, b.scope))
        if b.kind == "param" and b.payload in self.taint.get(b.scope, {}):
            return {("param", self.taint[b.scope][b.payload], ())}
        return {"ext": {("ext", b.payload)}, "def": {("scope", b.payload)},
                "self": {("obj", b.payload)}}.get(b.kind, {UNKNOWN})

    def resolve(self, e: ast.AST, scope: Scope) -> set:
        self.tick()
        if isinstance(e, ast.Name):
            bindings, values = self.lookup(e.id, scope)
            return values.union(*(self.binding_values(b) for b in bindings))
        if isinstance(e, ast.Attribute):
            return set().union(*(self.attr_of(v, e.attr) for v in self.resolve(e.value, scope)))
        if isinstance(e, ast.Call):
            return self.call_result(e, scope)
        if isinstance(e, (ast.Subscript, ast.Starred, ast.NamedExpr, ast.Await)):   # containers are transparent
            return self.resolve(e.value, scope)
        parts = {ast.Tuple: "elts", ast.List: "elts", ast.Set: "elts", ast.Dict: "values", ast.BoolOp: "values"}
        if type(e) in parts:
            return set().union(*(self.resolve(x, scope) for x in getattr(e, parts[type(e)])))
        if isinstance(e, ast.IfExp):
            return self.resolve(e.body, scope) | self.resolve(e.orelse, scope)
        if id(e) in self.p.scopes:
            return {("scope", self.p.scopes[id(e)])}
        return {UNKNOWN}

    def attr_of(self, v: tuple, attr: str) -> set:
        kind = v[0]
        if kind == "ext":
            return {("ext", f"{v[1]}.{attr}")} | self.stored(attr, lambda base: ("ext", v[1]) in base)
        if kind == "inst":
            return {("ext", f"{v[1]}.{attr}")}
        if kind == "param":
            return {("param", v[1], v[2] + (attr,))}
        anything = lambda base: any(b[0] != "ext" for b in base)  # noqa: E731
        if kind in ("obj", "scope") and v[1].kind == "class":
            out = set()
            for b in self.members(v[1], attr):
                out |= {("method", x[1]) if kind == "obj" and x[0] == "scope" else x for x in self.binding_values(b)}
            return out | self.stored(attr, anything) or {UNKNOWN}
        return self.stored(attr, anything) | {UNKNOWN}

    def members(self, cls: Scope, attr: str, depth: int = 0) -> list[Binding]:
        """Bindings of ``attr`` in the student's class ``cls`` and its student-written bases."""
        found = list(cls.names.get(attr, ()))
        outer = cls.parent
        assert outer is not None   # a class scope always sits in a module or function scope
        for base in getattr(cls.node, "bases", ()) if depth < 20 else ():
            for v in self.resolve(base, outer):
                if v[0] == "scope" and v[1].kind == "class" and v[1] is not cls:
                    found += self.members(v[1], attr, depth + 1)
        return found

    def stored(self, attr: str, base_matches) -> set:
        """Values stored as ``attr`` on objects (``self.cell = cell``, ``torch.tanh = torch.lstm_cell``); the code
        that computed them is queued to be walked."""
        out = set()
        for base, value, scope in self.p.stores.get(attr, ()):
            bases = self.once(("base", id(base)), lambda base=base, scope=scope: self.resolve(base, scope))
            if not base_matches(bases):
                continue
            if value is not None and ("store", id(base)) not in self.memo:
                hop = ("uses", f"{unparse(base)}.{attr}", scope.cell, getattr(base, "lineno", 1))
                self.queue.append(("expr", (value, scope), (hop,)))
            out |= self.once(("store", id(base)),
                             lambda value=value, scope=scope: self.resolve(value, scope) if value else {UNKNOWN})
        return out

    def call_result(self, e: ast.Call, scope: Scope) -> set:
        out: set[tuple] = set()
        for f in self.resolve(e.func, scope):
            name = f[1] if f[0] == "ext" else ""
            if name == "builtins.type" and len(e.args) == 1:
                out |= {("param", v[1], v[2] + ("__class__",)) if v[0] == "param" else UNKNOWN
                        for v in self.resolve(e.args[0], scope)}
            elif name == "builtins.getattr" and (attr := _constant_str(e.args[1:2])) is not None:
                out |= set().union(*(self.attr_of(v, attr) for v in self.resolve(e.args[0], scope)))
            elif name in _PASS_THROUGH and e.args:
                out |= self.resolve(e.args[0], scope)
            elif name.rpartition(".")[2][:1].isupper():
                out.add(("inst", name))
            elif f[0] == "scope" and f[1].kind == "class":
                out.add(("obj", f[1]))
            elif f[0] in ("scope", "method"):   # what the student's function returns
                s = f[1]
                out |= self.once(("returns", id(s)), lambda s=s: set().union(*(self.resolve(r, s) for r in s.returns)))
                out |= set() if s.returns else {UNKNOWN}
            else:
                out.add(UNKNOWN)
        return out


# calling these returns (a wrapper of) their first argument
_PASS_THROUGH = frozenset({"functools.partial", "functools.wraps", "functools.cache", "functools.lru_cache",
                           "builtins.staticmethod", "builtins.classmethod", "builtins.property"})


def constant_name(call: ast.Call) -> bool:
    """Whether ``getattr``/``setattr``/``delattr`` is called with a constant attribute name."""
    return _constant_str(call.args[1:2]) is not None


def _constant_str(args: list[ast.expr]) -> str | None:
    """The string the one expression in ``args`` is a constant of, or None (also for no expression)."""
    return args[0].value if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str) else None


def unparse(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except Exception:
        return "this expression"
    return text if len(text) <= 60 else text[:57] + "..."
