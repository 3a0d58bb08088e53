"""The student's code as :mod:`static_check` sees it: notebook cells turned into ASTs (IPython syntax removed line
for line), and every scope with the bindings of its names. Student code is only parsed here, never run.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

_MAX_CELL = 300_000          # characters: a longer cell is not parsed (it counts as a cell that does not parse)
_MAX_TRANSFORM = 50_000      # characters: IPython's transformer is slow on huge cells; the regex is linear

# ---------------------------------------------------------------------------------------------------------------
# Cells -> ASTs

# a line IPython would not hand to Python: `%magic`, `!shell`, `?help`, `x = !ls`, `x = %env`, `obj?`
_MAGIC = re.compile(r"^(\s*)(?:[%!?].*|[\w.,\s]+=\s*[%!].*|[\w.]+\?\??\s*)$")


@lru_cache(maxsize=1)
def _ipython_transform():
    try:  # the exact transformation the kernel applies, when IPython is installed
        from IPython.core.inputtransformer2 import TransformerManager
    except Exception:
        return None
    return TransformerManager().transform_cell


def to_python(source: str) -> tuple[str, bool]:
    """``source`` with IPython syntax replaced, line for line, by ``get_ipython()`` calls (a magic inside a function
    is then dynamic access), and whether IPython's own transformer did it (then the text is exactly what the kernel
    runs). The body of a ``%%cell`` magic is kept: it runs in the kernel for ``%%time`` and ``%%capture``, and
    checking it when it does not (``%%bash``) only errs on the safe side."""
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        lines[0] = ""
    text = "\n".join(lines) + "\n"
    transform = _ipython_transform() if len(text) <= _MAX_TRANSFORM else None
    if transform is not None:
        try:
            out = transform(text)
            blank = len(text) - len(text.lstrip("\n \t"))  # IPython drops leading blank lines: put them back
            out = "\n" * text[:blank].count("\n") + out
            if out.count("\n") == text.count("\n"):
                return out, True
        except Exception:
            pass
    return "\n".join(_MAGIC.sub(r"\1get_ipython()", line) for line in lines) + "\n", False


def parse_cells(cells: Sequence[str]) -> tuple[list[ast.Module | None], set[int]]:
    """One module per cell (None where it is not Python even after IPython syntax is removed), and the cells not
    parsed that the kernel may still have run: too long to parse here, or not transformed by IPython itself."""
    out: list[ast.Module | None] = []
    unsure: set[int] = set()
    for i, source in enumerate(map(str, cells)):
        exact = False
        try:
            if len(source) > _MAX_CELL:
                raise MemoryError("cell too long to check")
            text, exact = to_python(source)
            out.append(ast.parse(text))
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as error:
            out.append(None)
            if isinstance(error, MemoryError) or not exact:
                unsure.add(i)
    return out, unsure


# ---------------------------------------------------------------------------------------------------------------
# Scopes and bindings


@dataclass(eq=False)
class Binding:
    """``name`` gets a value here: kind "ext" (payload: a qualified name from an import), "expr" (payload: an
    expression evaluated in ``scope``), "def" (payload: the Scope of a def, lambda or class), "param" (payload:
    the parameter's name), "self" (payload: the class whose method takes it), or "unknown"."""

    name: str
    kind: str
    payload: object
    scope: Scope
    node: ast.AST


@dataclass(eq=False)
class Scope:
    kind: str                              # "module" (one per cell), "function" (def or lambda) or "class"
    node: ast.AST | None
    parent: Scope | None
    cell: int
    names: dict[str, list[Binding]]        # module cells share one dict: the kernel's one namespace
    params: list[str] = field(default_factory=list)    # positional parameters in order
    varargs: list[str] = field(default_factory=list)   # *args and **kwargs names
    declared_global: set[str] = field(default_factory=set)
    declared_nonlocal: set[str] = field(default_factory=set)
    returns: list[ast.expr] = field(default_factory=list)

    @property
    def name(self) -> str:
        return getattr(self.node, "name", "a lambda")


@dataclass
class Program:
    modules: list[ast.Module | None]
    unsure: set[int]                       # cells not parsed here that the kernel may have run (parse_cells)
    globals: dict[str, list[Binding]] = field(default_factory=dict)
    scopes: dict[int, Scope] = field(default_factory=dict)          # id(def, lambda or class node) -> its scope
    # attribute name -> (object expression, value expression or None, scope): `x.attr = value`, setattr(x, "attr", v)
    stores: dict[str, list[tuple[ast.expr, ast.expr | None, Scope]]] = field(default_factory=dict)
    stars: list[Binding] = field(default_factory=list)   # `from M import *` at module level (name "*", payload M)


def bind_program(cells: Sequence[str]) -> Program:
    program = Program(*parse_cells(cells))
    for i, module in enumerate(program.modules):
        if module is not None:
            try:
                _Binder(program, Scope("module", None, None, i, program.globals)).visit(module)
            except RecursionError:   # nested too deeply to follow here, yet the kernel ran it
                program.modules[i] = None
                program.unsure.add(i)
    return program


def _enclosing(scope: Scope):
    while scope.parent is not None:
        scope = scope.parent
        yield scope


class _Binder(ast.NodeVisitor):
    """Records every binding (flow-insensitively: a name means all it is ever bound to) and every scope."""

    def __init__(self, program: Program, scope: Scope):
        self.program, self.scope = program, scope

    def bind(self, name, kind, payload, node, scope=None):
        s = self.scope
        names = self.program.globals if name in s.declared_global else s.names
        if name in s.declared_nonlocal:   # the nearest enclosing function that binds it (or may, later)
            outer = [o for o in _enclosing(s) if o.kind == "function"]
            names = next((o.names for o in outer if name in o.names), outer[0].names if outer else names)
        names.setdefault(name, []).append(Binding(name, kind, payload, scope or s, node))

    def target(self, t, value):
        if isinstance(t, ast.Name):
            self.bind(t.id, "expr" if value is not None else "unknown", value, t)
        elif isinstance(t, (ast.Tuple, ast.List)):
            pairs = isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(t.elts) and not any(
                isinstance(e, ast.Starred) for e in t.elts + value.elts)
            for k, elt in enumerate(t.elts):
                self.target(elt, value.elts[k] if pairs else value)
        elif isinstance(t, ast.Starred):
            self.target(t.value, value)
        elif isinstance(t, ast.Attribute):
            self.program.stores.setdefault(t.attr, []).append((t.value, value, self.scope))
            self.visit(t.value)
        else:
            self.visit(t)

    def new_scope(self, kind, node):
        scope = Scope(kind, node, self.scope, self.scope.cell, {})
        self.program.scopes[id(node)] = scope
        return scope

    def function(self, node, body):
        a = node.args
        for default in a.defaults + [d for d in a.kw_defaults if d is not None]:
            self.visit(default)
        scope = self.new_scope("function", node)
        positional = a.posonlyargs + a.args
        scope.params = [p.arg for p in positional]
        scope.varargs = [p.arg for p in (a.vararg, a.kwarg) if p is not None]
        outer, self.scope = self.scope, scope
        for p in positional + a.kwonlyargs + [p for p in (a.vararg, a.kwarg) if p is not None]:
            self.bind(p.arg, "param", p.arg, p)
        # defaults belong to the last positional parameters; kw_defaults holds one entry (or None) per keyword-only one
        with_defaults = list(zip(positional[::-1], a.defaults[::-1], strict=False))
        for p, default in with_defaults + list(zip(a.kwonlyargs, a.kw_defaults, strict=True)):
            if default is not None:
                self.bind(p.arg, "expr", default, p, scope=outer)
        if outer.kind == "class" and positional:
            decorators = {getattr(d, "id", None) for d in getattr(node, "decorator_list", ())}
            if "classmethod" in decorators:
                self.bind(positional[0].arg, "def", outer, positional[0])
            elif "staticmethod" not in decorators:
                self.bind(positional[0].arg, "self", outer, positional[0])
        for stmt in body:
            self.visit(stmt)
        self.scope = outer
        return scope

    def visit_FunctionDef(self, node):
        for d in node.decorator_list:
            self.visit(d)
        self.bind(node.name, "def", self.function(node, node.body), node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        self.function(node, [node.body]).returns.append(node.body)

    def visit_Return(self, node):
        if node.value is not None:
            self.scope.returns.append(node.value)
            self.visit(node.value)

    def visit_ClassDef(self, node):
        for n in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(n)
        scope = self.new_scope("class", node)
        outer, self.scope = self.scope, scope
        for stmt in node.body:
            self.visit(stmt)
        self.scope = outer
        self.bind(node.name, "def", scope, node)

    def visit_Import(self, node):
        for a in node.names:
            self.bind(a.asname or a.name.split(".")[0], "ext", a.name if a.asname else a.name.split(".")[0], node)

    def visit_ImportFrom(self, node):
        module = "." * node.level + (node.module or "")
        for a in node.names:
            if a.name == "*":
                self.program.stars.append(Binding("*", "ext", module, self.scope, node))
            else:
                self.bind(a.asname or a.name, "ext", f"{module}.{a.name}", node)

    def visit_Global(self, node):
        self.scope.declared_global.update(node.names)

    def visit_Nonlocal(self, node):
        self.scope.declared_nonlocal.update(node.names)

    def visit_Assign(self, node):
        for t in node.targets:
            self.target(t, node.value)
        self.visit(node.value)

    def visit_AugAssign(self, node):
        self.target(node.target, node.value)
        self.visit(node.value)

    def visit_AnnAssign(self, node):  # the annotation is never evaluated for what it names
        if node.value is not None:
            self.target(node.target, node.value)
            self.visit(node.value)

    def visit_NamedExpr(self, node):
        self.target(node.target, node.value)
        self.visit(node.value)

    def visit_For(self, node):
        self.target(node.target, node.iter)
        for n in [node.iter] + node.body + node.orelse:
            self.visit(n)

    visit_AsyncFor = visit_For

    def visit_comprehension(self, node):  # bound in the enclosing scope: more bindings, never fewer
        self.target(node.target, node.iter)
        for n in [node.iter] + node.ifs:
            self.visit(n)

    def visit_withitem(self, node):
        if node.optional_vars is not None:
            self.target(node.optional_vars, node.context_expr)
        self.visit(node.context_expr)

    def visit_ExceptHandler(self, node):
        if node.name:
            self.bind(node.name, "unknown", None, node)
        self.generic_visit(node)

    def visit_MatchAs(self, node):
        if node.name:
            self.bind(node.name, "unknown", None, node)
        self.generic_visit(node)

    visit_MatchStar = visit_MatchAs

    def visit_Call(self, node):
        f, args = node.func, node.args
        if (isinstance(f, ast.Name) and f.id == "setattr" and len(args) == 3 and isinstance(args[1], ast.Constant)
                and isinstance(args[1].value, str)):
            self.program.stores.setdefault(args[1].value, []).append((args[0], args[2], self.scope))
        self.generic_visit(node)
