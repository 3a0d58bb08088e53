"""Trusted notebook handling for the sandboxed grader: what is graded (parsed from the SOURCE notebook in
``solutions/``), the notebook that runs in the sandbox (rebuilt from a submission, whatever its JSON holds), and the
autograded notebook that formgrader and feedback show (generated messages, student-visible tests only).

Nothing here executes student code; a submission is only ever read as data (size-capped, no symlinks followed).
"""
from __future__ import annotations

import ast
import copy
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field

import nbformat
from nbformat import v4

MAX_NOTEBOOK_BYTES = 20 * 2**20  # read here; a bigger one (outputs, mostly) is read by a memory-capped child
MAX_WITH_OUTPUTS_BYTES = 100 * 2**20  # nbgrader's exchange collects nothing bigger (max_file_size); not read
_CHILD_MEMORY = 2 * 2**30
_WITHOUT_OUTPUTS = (  # the child's whole program: the cells of the notebook on stdin, outputs dropped, as JSON
    "import json, sys\n"
    "d = json.loads(sys.stdin.buffer.read().decode('utf-8-sig'))\n"
    "c = d.get('cells') if isinstance(d, dict) else None\n"
    "c = [{k: v for k, v in x.items() if k not in ('outputs', 'attachments')} for x in c if isinstance(x, dict)]\n"
    "json.dump(c, sys.stdout)\n")
CELL_TEXT_SHOWN = 10_000  # characters of one cell's output shown in feedback
IMAGE_SHOWN = 1_000_000  # bytes of one (base64) image shown in feedback
HIDDEN_BEGIN, HIDDEN_END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"


def _nbgrader(cell) -> dict:
    meta = cell.get("metadata") if isinstance(cell, dict) else None  # a submission's JSON may hold any type here
    md = meta.get("nbgrader") if isinstance(meta, dict) else None
    return md if isinstance(md, dict) else {}


@dataclass
class GradedCell:
    """One autograded test cell of the source notebook."""
    grade_id: str
    points: float
    checks: list[str]  # grading.check names called in the cell, in order
    functions: dict[str, str] = field(default_factory=dict)  # check name -> the answer it is given (a name)


@dataclass
class SourceNotebook:
    name: str  # notebook id (file name without .ipynb)
    nb: nbformat.NotebookNode  # the instructor's source, with solutions and hidden tests
    release: nbformat.NotebookNode  # the student version (from nbgrader's generate_assignment)
    graded: list[GradedCell] = field(default_factory=list)
    hidden_lines: list[str] = field(default_factory=list)  # lines of hidden tests, never to be shown

    @property
    def answer_ids(self) -> set[str]:
        """grade_ids of the cells a student writes (nbgrader solution cells)."""
        return {_nbgrader(c)["grade_id"] for c in self.nb.cells if _nbgrader(c).get("solution")
                and _nbgrader(c).get("grade_id")}


def check_calls(source: str) -> list[tuple[str, str | None]]:
    """(check name, the answer's name) of every ``grading.check("name", answer)`` / ``check(...)`` call in a
    cell; the answer's name is None when it is not a plain name (``check("x", f(1))``)."""
    cleaned = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    calls = []
    for node in ast.walk(ast.parse(cleaned)):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            if (isinstance(func, ast.Attribute) and func.attr == "check") or (
                    isinstance(func, ast.Name) and func.id == "check"):
                target = node.args[1] if len(node.args) > 1 else None
                calls.append((node.args[0].value, target.id if isinstance(target, ast.Name) else None))
    return calls


def check_names(source: str) -> list[str]:
    """Names passed as the first argument of ``grading.check(...)`` / ``check(...)`` calls in a cell."""
    return [name for name, _ in check_calls(source)]


def _hidden_lines(source: str) -> list[str]:
    lines, inside = [], False
    for line in source.splitlines():
        if HIDDEN_BEGIN in line:
            inside = True
        elif HIDDEN_END in line:
            inside = False
        elif inside and len(line.strip()) >= 6:
            lines.append(line.strip())
    return lines


def load_source(path: str, release_path: str) -> SourceNotebook:
    """Parse the source notebook; raise ValueError if a graded cell could not be judged outside the kernel."""
    nb = nbformat.read(path, as_version=4)
    release = nbformat.read(release_path, as_version=4)
    name = os.path.splitext(os.path.basename(path))[0]
    src = SourceNotebook(name, nb, release)
    for cell in nb.cells:
        md = _nbgrader(cell)
        if cell.cell_type == "code":
            src.hidden_lines += _hidden_lines(cell.source)
        if md.get("grade") and not md.get("solution") and cell.cell_type == "code":
            calls = check_calls(cell.source)
            if not calls:
                raise ValueError(f"{path}: graded cell {md.get('grade_id')!r} calls no grading.check(...): the "
                                 "sandboxed grader only trusts checks judged outside the student's kernel")
            src.graded.append(GradedCell(md["grade_id"], float(md.get("points") or 0), [n for n, _ in calls],
                                         {n: f for n, f in calls if f}))
    return src


def read_submission(path: str) -> tuple[list[dict] | None, str | None]:
    """The cells of a submitted notebook as plain dicts, or (None, reason). Never follows a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, "the notebook was not submitted"
    except OSError:
        return None, "the submitted notebook could not be opened (not a regular file)"
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None, "the submitted notebook is not a regular file"
        if st.st_size > MAX_WITH_OUTPUTS_BYTES:
            return None, f"the submitted notebook is larger than {MAX_WITH_OUTPUTS_BYTES >> 20} MB, most likely " \
                         "its outputs: clear them (Kernel > Restart Kernel and Clear Outputs), save, and submit again"
        if st.st_size > MAX_NOTEBOOK_BYTES:
            return _cells_without_outputs(fh)
        raw = fh.read(MAX_NOTEBOOK_BYTES + 1)
    if not raw.strip():
        return None, "the submitted notebook is empty (0 bytes): was it saved before it was submitted?"
    try:
        data = json.loads(raw.decode("utf-8-sig"))  # -sig: a byte-order mark (some Windows editors) is not an error
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, "the submitted notebook is not valid JSON (was it edited outside Jupyter?)"
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list):
        return None, "the submitted file is not a Jupyter notebook (no list of cells)"
    return [c for c in cells if isinstance(c, dict)], None


def _cells_without_outputs(fh) -> tuple[list[dict] | None, str | None]:
    """A notebook made big by its outputs (plots, training logs) is still graded, as a human grader would: it is
    parsed in a child process with capped memory, so that a hostile file of tiny JSON objects (gigabytes once
    parsed) costs the grader nothing, and only the cells without their outputs come back."""
    if shutil.which("prlimit") is None:
        return None, f"the submitted notebook is larger than {MAX_NOTEBOOK_BYTES >> 20} MB: clear its outputs"
    try:
        done = subprocess.run(["prlimit", f"--as={_CHILD_MEMORY}", "--", sys.executable, "-I", "-c", _WITHOUT_OUTPUTS],
                              stdin=fh, capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0 or len(done.stdout) > MAX_NOTEBOOK_BYTES:
        return None, "the submitted notebook is not valid JSON, or its cells alone are too large to read"
    cells = json.loads(done.stdout)
    return [c for c in cells if isinstance(c, dict)], None


def _text(source) -> str:
    if isinstance(source, list):
        return "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


def _new_cell(cell_type: str, source: str, nbgrader: dict | None = None):
    maker = {"code": v4.new_code_cell, "markdown": v4.new_markdown_cell}.get(cell_type, v4.new_raw_cell)
    cell = maker(source)
    if nbgrader:
        cell.metadata["nbgrader"] = copy.deepcopy(nbgrader)
    return cell


def _cell_type(cell: dict) -> str:
    kind = cell.get("cell_type")
    return kind if kind in ("code", "markdown", "raw") else "raw"  # any other value (a list, a dict) is no cell type


def _normalised(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def defined_names(source: str) -> set[str]:
    """Top-level names a code cell defines (def, class, plain assignment)."""
    cleaned = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        body = ast.parse(cleaned).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # a cell that does not parse: its def lines
        return set(re.findall(r"^(?:async\s+def|def|class)\s+([A-Za-z_]\w*)", source, re.M))
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def match_cells(src: SourceNotebook, cells: list[dict]) -> list[str | None]:
    """The source grade_id each submitted cell stands for (None: the student's own cell).

    A cell's own nbgrader metadata decides first (first occurrence of an id). Cells whose metadata was lost (an
    editor that drops cell metadata, answers pasted into a fresh notebook: nbgrader issues #424, #1398) are
    recognised by content, but only for ids no cell carries: a cell identical to a locked or test cell of the
    release is that cell, and the first code cell defining a name that an answer cell of the release defines
    (``def rnn_cell_forward``) is that answer. Without this the restored test cells would all land at the top,
    before any answer, and a complete notebook would score 0."""
    known = {_nbgrader(c).get("grade_id") for c in src.nb.cells if _nbgrader(c).get("grade_id")}
    matched: list[str | None] = []
    seen: set[str] = set()
    for cell in cells:
        gid = _nbgrader(cell).get("grade_id")
        if isinstance(gid, str) and gid in known and gid not in seen:  # the first cell carrying this id
            matched.append(gid)
            seen.add(gid)
        else:
            matched.append(None)
    missing = known - seen
    if not missing:
        return matched
    by_text: dict[tuple[str, str], str] = {}
    by_names: list[tuple[str, set[str]]] = []
    for c in src.release.cells:
        md = _nbgrader(c)
        gid = md.get("grade_id")
        if not isinstance(gid, str) or gid not in missing:
            continue
        if md.get("solution") and c.cell_type == "code":
            by_names.append((gid, defined_names(c.source)))
        elif not md.get("solution"):
            by_text.setdefault((c.cell_type, _normalised(c.source)), gid)
    for k, cell in enumerate(cells):
        gid = _nbgrader(cell).get("grade_id")
        if matched[k] is not None or (isinstance(gid, str) and gid in known):
            continue  # recognised already, or a second copy of a cell that is present
        text, ctype = _text(cell.get("source")), _cell_type(cell)
        gid = by_text.get((ctype, _normalised(text)))
        if gid is None and ctype == "code":
            names = defined_names(text)
            gid = next((g for g, wanted in by_names if g in missing and names & wanted), None)
        if gid in missing:
            matched[k] = gid
            missing.discard(gid)
    return matched


def prepare(src: SourceNotebook, cells: list[dict] | None) -> nbformat.NotebookNode:
    """The notebook to execute: the student's cells in the student's order, but every graded, test or locked cell
    (matched by :func:`match_cells`) replaced by the source's version, the source's nbgrader metadata
    (points, ids) restored, and missing test/locked code cells put back after their predecessor. With no
    readable submission, the release itself."""
    source_cells = {_nbgrader(c).get("grade_id"): c for c in src.nb.cells if _nbgrader(c).get("grade_id")}
    cells = cells if cells is not None else src.release.cells
    out: list[nbformat.NotebookNode] = []
    position: dict[str, int] = {}
    for cell, gid in zip(cells, match_cells(src, cells), strict=True):
        ctype = _cell_type(cell)
        if isinstance(gid, str) and gid in source_cells and gid not in position:
            master = source_cells[gid]
            md = _nbgrader(master)
            if md.get("solution"):
                new = _new_cell(master.cell_type, _text(cell.get("source")), md)
            else:
                new = _new_cell(master.cell_type, master.source, md)
            position[gid] = len(out)
        else:
            new = _new_cell(ctype, _text(cell.get("source")))
        out.append(new)
    # put back missing graded/locked code cells (a deleted test cell is restored, as nbgrader's add_missing_cells)
    order = [_nbgrader(c).get("grade_id") for c in src.nb.cells]
    for k, master in enumerate(src.nb.cells):
        md = _nbgrader(master)
        gid = md.get("grade_id")
        if not gid or gid in position or md.get("solution") or master.cell_type != "code":
            continue
        if not (md.get("grade") or md.get("locked")):
            continue
        before = [position[g] for g in order[:k] if g in position]
        at = max(before) + 1 if before else 0
        out.insert(at, _new_cell("code", master.source, md))
        position = {g: (p + 1 if p >= at else p) for g, p in position.items()}
        position[gid] = at
    nb = v4.new_notebook(cells=out, metadata=copy.deepcopy(src.nb.metadata))
    return nb


class Scrubber:
    """Removes hidden-test lines from text a student will see (a kernel can print its own input history)."""

    def __init__(self, hidden_lines: list[str]):
        self.hidden = sorted(set(hidden_lines), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        if not self.hidden or not text:
            return text
        lines = text.splitlines(keepends=True)
        return "".join("[hidden test line removed]\n" if any(h in line for h in self.hidden) else line
                       for line in lines)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def safe_outputs(outputs, scrub: Scrubber, truncated: int = 0) -> list:
    """Re-build untrusted outputs from the sandbox as plain nbformat outputs, capped and scrubbed."""
    clean, used = [], 0
    for out in outputs if isinstance(outputs, list) else []:
        if not isinstance(out, dict) or used >= CELL_TEXT_SHOWN:
            continue
        kind = out.get("output_type")
        if kind == "stream":
            text = scrub(_text(out.get("text")))[: CELL_TEXT_SHOWN - used]
            used += len(text)
            clean.append(v4.new_output("stream", name="stderr" if out.get("name") == "stderr" else "stdout",
                                       text=text))
        elif kind == "error":
            tb = scrub(_ANSI.sub("", "\n".join(_text(t) for t in out.get("traceback", []) if isinstance(t, str))))
            tb = tb[: CELL_TEXT_SHOWN - used]
            used += len(tb)
            clean.append(v4.new_output("error", ename=str(out.get("ename", "Error"))[:100],
                                       evalue=scrub(str(out.get("evalue", "")))[:1000], traceback=tb.splitlines()))
        elif kind in ("execute_result", "display_data") and isinstance(out.get("data"), dict):
            data = {}
            plain = out["data"].get("text/plain")
            if plain is not None:
                data["text/plain"] = scrub(_text(plain))[: max(0, CELL_TEXT_SHOWN - used)]
                used += len(data["text/plain"])
            png = out["data"].get("image/png")
            if isinstance(png, str) and len(png) <= IMAGE_SHOWN and re.fullmatch(r"[A-Za-z0-9+/=\s]*", png):
                data["image/png"] = png
            if data:
                clean.append(v4.new_output("display_data", data=data))
    if truncated:
        clean.append(v4.new_output("stream", name="stderr",
                                   text=f"\n[grader: {truncated:,} more characters of output were not kept]\n"))
    return clean


def autograded(src: SourceNotebook, executed: nbformat.NotebookNode, cell_records: dict[int, dict],
               messages: dict[str, str], note: str | None = None) -> nbformat.NotebookNode:
    """The notebook stored in autograded/ (shown by formgrader and turned into feedback): student cells with their
    capped, scrubbed outputs; test cells with the RELEASE source (no hidden tests) and the generated verdicts;
    ``note`` (generated by the grader, never student text) as a first markdown cell."""
    release_cells = {_nbgrader(c).get("grade_id"): c for c in src.release.cells if _nbgrader(c).get("grade_id")}
    scrub = Scrubber(src.hidden_lines)
    nb = copy.deepcopy(executed)
    for index, cell in enumerate(nb.cells):
        md = _nbgrader(cell)
        gid = md.get("grade_id")
        if cell.cell_type != "code":
            continue
        if gid in messages:
            cell.source = release_cells[gid].source if gid in release_cells else "# (test cell)"
            cell.outputs = [v4.new_output("stream", name="stdout", text=messages[gid])]
        else:
            record = cell_records.get(index, {})
            truncated = record.get("truncated")
            cell.outputs = safe_outputs(record.get("outputs", []), scrub,
                                        truncated if type(truncated) is int and truncated > 0 else 0)
            if not md.get("solution") and md.get("locked") and gid in release_cells:
                cell.source = release_cells[gid].source
        cell.execution_count = None
    if note:
        nb.cells.insert(0, v4.new_markdown_cell(f"**Grader's note:** {note}"))
    return nb
