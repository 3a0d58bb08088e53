"""The rule table enforced statically, in the trusted parent, before the sandbox's exports are judged.

For every graded check, the answer the hidden test hands to ``grading.check`` (``lstm_cell_forward``) is read — never
run — in the student's code cells with :func:`rnnkit.grading.static_check.check_function` against the check's rule
(:mod:`rnnkit.grading.specs.table`): imports and aliases resolved, the student's own helpers followed. A finding
fails the check with its generated message; a "dynamic" finding (a computed ``getattr``, ``exec``, ``__import__``
...) also asks for a human: the test cell is marked "needs manual grade" in the gradebook, so an instructor can
restore the points in formgrader after a look. The sandbox's guard catches the same delegations at run time
(:func:`rnnkit.grading.export.collect`), independently.

That check reads only what a graded function reaches. :func:`tampering` reads everything else the STUDENT wrote —
every statement of the answer cells and of cells the student added, top level and every function body, reached or
not (never the course's setup, locked and test cells, restored from the source by :func:`notebooks.prepare`, which
legitimately use ``rnnkit.grading``) — for code that could change the grading itself rather than compute an
answer: forging the exported results by monkeypatching ``rnnkit.grading`` (``check``, ``export.collect``,
``export.save``) or writing into the export folder. It flags

* any reference to ``rnnkit.grading`` or its submodules (imports, aliases, attribute chains), the export folder's
  variable ``RNNKIT_GRADING_EXPORT`` (as a name, or in a string: it has no innocent use), and ``os.environ`` /
  ``os.getenv`` / ``os.putenv``;
* writing files: ``open`` with a mode holding w, a, x or + (or a computed one), ``numpy.save*``, ``torch.save``,
  ``Path.write_*`` / ``touch`` / ``mkdir`` ..., ``shutil``, ``os.remove`` / ``rename`` / ``makedirs`` ..., and
  shell escapes and cell magics that may write (``!cp``, ``%%writefile``);
* monkeypatching: assigning to (or deleting) an attribute of an imported module, class or function
  (``torch.x = ...``, ``rnnkit.cells.lstm_cell = ...``), ``setattr``/``delattr`` on one; and reaching the
  interpreter's internals: ``sys.modules``, ``gc.get_objects`` / ``get_referrers``, frames (``sys._getframe``,
  ``inspect.currentframe`` / ``stack``, ``f_globals`` ...), ``ctypes``, ``builtins`` / ``__builtins__``, and
  code that hides what it does (``exec``/``eval``/``compile``, ``__import__``, ``importlib``, ``globals()``,
  ``get_ipython()``, unpickling: ``pickle``, ``torch.load``, ``allow_pickle=True``).

Comments and strings never count (except that variable's name). The consequence: tampering does not prove a wrong
answer, but no export of such a notebook can be trusted, so every check of the notebook scores 0 AND every graded
cell is marked "needs manual grade", with a message naming the cell, the line and what was found; the instructor
restores the points in formgrader after a look. Correct solutions produce no finding (tested for every assignment).
"""
from __future__ import annotations

import ast
import re
from collections.abc import Sequence

import nbformat

from . import notebooks, specs
from ._ast_names import Resolver, TooComplex, equivalents, unparse
from ._ast_scopes import Program, Scope, bind_program, to_python
from .rules import Rule
from .static_check import Finding, check_function

MAX_SHOWN = 3  # findings listed per check


def notebook_code(executed: nbformat.NotebookNode) -> list[str]:
    """The code of the notebook that ran, one entry per cell (markdown cells as empty strings, so a finding's cell
    index is the notebook's): the student's answers and the course's own setup and test cells, whose imports and
    globals an answer may use."""
    return [cell.source if cell.cell_type == "code" else "" for cell in executed.cells]


def findings(src: notebooks.SourceNotebook, executed: nbformat.NotebookNode) -> dict[str, list[Finding]]:
    """check name -> what its answer uses against its rule (an empty list: nothing); where the student's code
    tampers with the grading (:func:`tampering`), those findings for every check of the notebook."""
    cells = notebook_code(executed)
    forged = tampering(cells, student_cells(executed))
    found: dict[str, list[Finding]] = {}
    for graded in src.graded:
        for name in graded.checks:
            function = graded.functions.get(name)
            if forged:
                found[name] = forged
            elif function is not None:
                found[name] = check_function(cells, function, specs.get(name).rule)
    return found


def message(name: str, found: Sequence[Finding]) -> str:
    """The feedback for a check failed by its findings: the generated lines, and whether a human will look."""
    if any(f.kind == "tamper" for f in found):
        lines = [f"{name}: not graded — code in your notebook could change the grading"]
        lines += [f"  {f.message}" for f in found[:MAX_SHOWN]]
        if len(found) > MAX_SHOWN:
            lines.append(f"  ... and {len(found) - MAX_SHOWN} more")
        return "\n".join(lines)
    lines = [f"{name}: breaks the rules of this part"] + [f"  {f.message}" for f in found[:MAX_SHOWN]]
    if len(found) > MAX_SHOWN:
        lines.append(f"  ... and {len(found) - MAX_SHOWN} more")
    if any(f.needs_manual_grade for f in found):
        lines.append("  (code the grader cannot read statically: your instructor will look at this part by hand)")
    return "\n".join(lines)


def needs_manual_grade(found: Sequence[Finding]) -> bool:
    return any(f.needs_manual_grade or f.kind == "tamper" for f in found)


# ------------------------------------------------------------------------------------------------------------------
# Tampering: the student's own code, every statement

EXPORT_ENV = "RNNKIT_GRADING_EXPORT"   # rnnkit.grading.check.EXPORT_ENV (not imported: check imports torch)
_WHY = "answer cells may not change the grader or the libraries; your instructor will look at this notebook by hand"
_REFERENCED = Rule(forbidden=(
    "rnnkit.grading", "os.environ", "os.environb", "os.getenv", "os.putenv", "os.unsetenv", "posix.environ",
    "sys.modules", "sys._getframe", "sys.settrace", "sys.setprofile", "gc.get_objects", "gc.get_referrers",
    "gc.get_referents", "inspect.currentframe", "inspect.stack", "inspect.trace", "inspect.getouterframes",
    "inspect.getinnerframes", "ctypes", "_ctypes", "builtins.__builtins__", "builtins.exec", "builtins.eval",
    "builtins.compile", "builtins.__import__", "builtins.globals", "builtins.vars", "builtins.locals",
    "importlib", "IPython.get_ipython", "IPython._history", "IPython.core", "ipykernel",
    # unpickling runs whatever code the bytes name, and these build or run code from data
    "pickle", "_pickle", "marshal", "dill", "cloudpickle", "joblib", "shelve", "copyreg", "torch.load",
    "torch.jit.load", "torch.package", "types.FunctionType", "types.CodeType", "runpy", "code", "codeop",
    "pydoc.locate"), why="")
_WRITES = Rule(forbidden=(
    "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt", "numpy.memmap", "numpy.lib.format",
    "torch.save", "shutil", "os.open", "os.remove", "os.rename", "os.renames", "os.replace", "os.unlink",
    "os.makedirs", "os.mkdir", "os.rmdir", "os.removedirs", "os.symlink", "os.link", "os.chmod", "os.chown",
    "os.truncate", "os.write", "os.utime", "os.system", "os.popen", "os.exec*", "os.spawn*", "os.posix_spawn*",
    "subprocess", "pty", "multiprocessing", "io.FileIO", "zipfile", "tarfile", "sqlite3", "pathlib.Path.write_*",
    "pathlib.Path.touch", "pathlib.Path.mkdir", "pathlib.Path.rename", "pathlib.Path.replace",
    "pathlib.Path.unlink", "pathlib.Path.rmdir", "pathlib.Path.symlink_to", "pathlib.Path.hardlink_to",
    "pathlib.Path.chmod"), why="")
# methods that write whatever object has them (``p.write_text``, ``arr.tofile``): matched by name on any object
_WRITE_METHODS = frozenset({"write_text", "write_bytes", "touch", "symlink_to", "hardlink_to", "tofile"})
_OPENS = frozenset({"builtins.open", "io.open", "codecs.open", "pathlib.Path.open"})
# attributes that reach a frame's or a function's namespace, whatever they are read from
_FRAME_ATTRS = frozenset({"__globals__", "__builtins__", "f_globals", "f_locals", "f_back", "f_builtins",
                          "gi_frame", "cr_frame", "ag_frame", "tb_frame", "__code__", "__closure__",
                          "__subclasses__"})
# attributes that change or expose a library object's namespace: `object.__setattr__(module, ...)`, `m.__dict__`
_NAMESPACE_ATTRS = frozenset({"__setattr__", "__delattr__", "__dict__"})
# library settings students set with an assignment: not the grader's, and the sandbox runs on the CPU
_SETTINGS = ("torch.backends.", "matplotlib.", "pandas.options.")
# magics that neither write files nor run code hidden in a string (%time's code is checked as code)
_LINE_MAGICS = frozenset({"matplotlib", "precision", "pprint", "xmode", "who", "whos", "pwd", "ls", "autosave",
                          "config", "pip", "conda", "load_ext", "autoreload", "pdb"})
_CODE_MAGICS = frozenset({"time", "timeit", "capture", "prun"})
_CELL_MAGICS = _CODE_MAGICS | {"html", "markdown", "latex", "svg", "javascript", "js"}
_SHELL_SAFE = re.compile(r"\s*(?:ls|pwd|nvidia-smi|nproc|whoami|which|pip (?:list|show|freeze)|python --version)"
                         r"(?:\s[\w\-./=]*)*\s*")


def student_cells(executed: nbformat.NotebookNode) -> list[int]:
    """Indices of the cells the student wrote: answer (solution) cells and cells the student added. Every other
    code cell carries a grade_id that :func:`notebooks.prepare` restored from the source, with the source's text."""
    out = []
    for i, cell in enumerate(executed.cells):
        md = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and (md.get("solution") or not md.get("grade_id")):
            out.append(i)
    return out


def tampering(cells: Sequence[str], student: Sequence[int]) -> list[Finding]:
    """What the student's cells (indices into ``cells``, a notebook's code cells with markdown as "") do to the
    grading rather than to their answers; [] for none. Reads, never runs; never raises on what the cells hold."""
    cells = [str(c) for c in cells]
    program = bind_program(cells)
    scan = _TamperScan(program, cells)
    for i in student:
        if not 0 <= i < len(cells) or not cells[i].strip():
            continue
        try:
            scan.cell(i)
        except (TooComplex, RecursionError, MemoryError):
            scan.add(i, 1, "code too large or nested too deeply to check")
        except Exception as error:  # a bug here must not pass a notebook unread: a person looks instead
            scan.add(i, 1, f"code that could not be checked ({type(error).__name__})")
    # what changes things first (shown first in feedback), then what reaches them, then imports
    rank = {"assigns": 0, "deletes": 0, "calls": 0, "opens": 0, "writes": 0, "runs": 0, "the": 0, "imports": 2}
    return sorted(scan.found, key=lambda f: (rank.get(f.name.split()[0], 1), f.cell, f.line))


class _TamperScan(Resolver):
    def __init__(self, program: Program, cells: list[str]):
        super().__init__(program)
        self.cells = cells
        self.found: list[Finding] = []

    def add(self, cell: int, line: int, what: str) -> None:
        if any((f.cell, f.line, f.name) == (cell, line, what) for f in self.found):
            return
        self.found.append(Finding("", cell, line, what, "tamper", f"cell {cell + 1}, line {line}: {what} — {_WHY}"))

    def cell(self, i: int) -> None:
        text, self.steps = self.cells[i], 0   # each cell gets the resolver's whole budget
        first = text.lstrip().split("\n", 1)[0]
        if first.startswith("%%"):
            magic = first[2:].split()[0] if first[2:].split() else ""
            if magic not in _CELL_MAGICS:
                self.add(i, 1, f"the cell magic %%{magic}, which may write files or run hidden code")
        if EXPORT_ENV in text and not self.p.modules[i]:
            self.add(i, 1, f"mentions {EXPORT_ENV}")
        module = self.p.modules[i]
        if module is None:   # the kernel raised SyntaxError on it and ran nothing, unless it was not parsed here
            if i in self.p.unsure and re.search(r"grading|environ|open|save|setattr|import|\.\w+\s*=", text):
                self.add(i, 1, "a cell too long or too unusual to check")
            return
        self.walk(module, Scope("module", None, None, i, self.p.globals), i)

    def walk(self, module: ast.AST, top: Scope, i: int) -> None:
        parents: dict[int, ast.AST] = {}
        stack = [(module, top)]
        while stack:
            node, scope = stack.pop()
            self.tick()
            inner = self.p.scopes.get(id(node), scope)
            for child in ast.iter_child_nodes(node):
                parents[id(child)] = node
                stack.append((child, inner))
            parent = parents.get(id(node))
            if not (isinstance(node, ast.Name) and node.id == "get_ipython" and _is_magic(parents.get(id(parent)))):
                self.node(node, scope, i, parent)

    def values(self, e: ast.AST, scope: Scope) -> set[str]:
        """The qualified names ``e`` may denote, with their other names."""
        out = set()
        for v in self.resolve(e, scope):
            if v[0] == "ext":
                out |= equivalents(v[1])
        return out

    def node(self, node: ast.AST, scope: Scope, i: int, parent: ast.AST | None) -> None:
        line = getattr(node, "lineno", 1)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and EXPORT_ENV in node.value:
            self.add(i, line, f"names {EXPORT_ENV}, the grader's export folder")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            for a in node.names:
                name = f"{module}.{a.name}" if module else a.name
                if _REFERENCED.forbids(name) or _REFERENCED.forbids(module) or _WRITES.forbids(name):
                    self.add(i, line, f"imports {name}")
        elif isinstance(node, ast.Name) and node.id == EXPORT_ENV:
            self.add(i, line, f"names {EXPORT_ENV}, the grader's export folder")
        elif isinstance(node, ast.Name) and node.id in ("setattr", "delattr") and not (
                isinstance(parent, ast.Call) and parent.func is node) and self.values(node, scope) & {
                "builtins.setattr", "builtins.delattr"}:   # handed on: functools.partial(setattr, module)
            self.add(i, line, f"passes {node.id} on")
        if isinstance(node, ast.Attribute) and (node.attr in _FRAME_ATTRS or node.attr in _NAMESPACE_ATTRS and any(
                not n.startswith(_SETTINGS) for n in self.values(node.value, scope))):
            self.add(i, line, f"reads {unparse(node)}, a namespace of the interpreter or a library")
        if isinstance(node, (ast.Name, ast.Attribute)) and not (
                isinstance(parent, ast.Attribute) and parent.value is node):   # whole chains only
            if isinstance(node.ctx, (ast.Store, ast.Del)) and isinstance(node, ast.Attribute):
                self.store(node.value, node.attr, "assigns to" if isinstance(node.ctx, ast.Store) else "deletes",
                           scope, i, line)
            elif isinstance(node.ctx, ast.Load):
                names = self.values(node, scope)
                hit = sorted(n for n in names if _REFERENCED.forbids(n) or _WRITES.forbids(n))
                if hit:
                    shown = unparse(node)
                    self.add(i, line, f"uses {shown}" + ("" if hit[0] == shown else f" ({hit[0]})"))
        elif isinstance(node, ast.Call):
            self.call(node, scope, i, line)

    def store(self, base: ast.AST, attr: str, verb: str, scope: Scope, i: int, line: int) -> None:
        for name in sorted(self.values(base, scope)):
            if not name.startswith(_SETTINGS):
                self.add(i, line, f"{verb} {name}.{attr}")
                return

    def call(self, node: ast.Call, scope: Scope, i: int, line: int) -> None:
        funcs = self.values(node.func, scope)
        if funcs & {"builtins.setattr", "builtins.delattr"} and node.args:
            verb = "setattr on" if "builtins.setattr" in funcs else "delattr on"
            for name in sorted(self.values(node.args[0], scope)):
                if not name.startswith(_SETTINGS):
                    self.add(i, line, f"calls {verb} {name}")
                    break
        if "builtins.getattr" in funcs and len(node.args) >= 2 and not isinstance(node.args[1], ast.Constant) \
                and self.values(node.args[0], scope):
            self.add(i, line, f"calls {unparse(node.func)} with a computed name")
        if funcs & _OPENS:
            at = 0 if "pathlib.Path.open" in funcs else 1   # Path(p).open("w"): the mode comes first
            mode = node.args[at] if len(node.args) > at else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
            text = mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else None
            if mode is not None and text is None:
                self.add(i, line, f"opens a file with a computed mode ({unparse(node)})")
            elif text is not None and set(text) & set("wax+"):
                self.add(i, line, f"opens a file for writing ({unparse(node)})")
        for k in node.keywords:   # np.load(io.BytesIO(data), allow_pickle=True) unpickles: runs code from data
            if (k.arg, getattr(k.value, "value", None)) in (("allow_pickle", True), ("weights_only", False)):
                self.add(i, line, f"unpickles data ({k.arg}={unparse(k.value)})")
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in _WRITE_METHODS:
            self.add(i, line, f"writes a file ({unparse(node)})")
        if isinstance(f, ast.Attribute) and _is_magic(f):
            self.magic(f.attr, node, scope, i, line)

    def magic(self, kind: str, node: ast.Call, scope: Scope, i: int, line: int) -> None:
        """``get_ipython().system('cp ...')``, ``.run_line_magic('time', 'code')``: IPython syntax as transformed."""
        args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in node.args]
        if kind in ("system", "getoutput") and args and args[0] is not None and _SHELL_SAFE.fullmatch(args[0]):
            return
        if kind == "run_line_magic" and len(args) >= 2 and args[0] in _LINE_MAGICS:
            return
        if kind == "run_line_magic" and len(args) >= 2 and args[0] in _CODE_MAGICS and args[1] is not None:
            try:   # the magic's argument is code the kernel runs: read it like the cell
                self.walk(ast.parse(to_python(args[1])[0]), scope, i)
                return
            except (SyntaxError, ValueError):
                pass
        shown = {"system": "a shell command", "getoutput": "a shell command"}.get(kind, "an IPython magic")
        self.add(i, line, f"runs {shown} ({unparse(node)}), which may write files or run hidden code")


def _is_magic(node) -> bool:
    """Whether ``node`` is ``get_ipython().system`` or ``.run_line_magic`` ...: IPython syntax, transformed."""
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call) and isinstance(
        node.value.func, ast.Name) and node.value.func.id == "get_ipython" and not node.value.args and node.attr in (
        "system", "getoutput", "run_line_magic", "run_cell_magic")
