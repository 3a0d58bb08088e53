"""Copy detection for instructors (``make similarity``): which submissions of an assignment share their code.

    python -m rnnkit.grading.similarity [--assignment A ...] [--out DIR] [--threshold S] [--root DIR]

For every ``<submitted>/<student>/<assignment>/`` (nbgrader's ``CourseDirectory.submitted_directory``) the notebook
is found and its answer cells recognised exactly as the grader does (:func:`submissions.locate`,
:func:`notebooks.read_submission`, :func:`notebooks.match_cells`); the student's own code cells count too (helpers
live there). What the course gave is removed before comparing: every line of the released notebook (signatures,
docstrings, nbgrader's ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` stub, test cells), docstrings, and
copydetect's boilerplate fingerprints of the release's code. A blank submission is then empty: it is listed, not
compared, like a missing or unreadable notebook or the notebook of another assignment. The rest is compared
pairwise with copydetect's winnowing fingerprints of the tokenised code (names, comments and layout do not count, so
renaming variables or reordering helpers does not hide a copy; Schleimer, Wilkerson & Aiken, SIGMOD 2003), through
its library API (``CodeFingerprint``, ``compare_files``): its own report links CSS from a CDN, so this one is ours.

Writes ``<out>/<assignment>.html`` (pairs ranked by similarity, matching code highlighted side by side, and the
students who could not be compared), ``<assignment>.csv`` (every pair) and ``<assignment>.json``, and prints the top
pairs. The report holds student code only: never the solutions, never a hidden test line. Nothing is executed and
nothing is fetched; the HTML is one self-contained file. A high score is a reason to look, not a verdict.
"""
from __future__ import annotations

import argparse
import ast
import csv
import html
import io
import json
import sys
from collections.abc import Set
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

from . import notebooks, submissions

NOISE = 25  # copydetect's default: shortest matching run (characters of tokenised code) that counts
GUARANTEE = 25  # every match this long is found (window = GUARANTEE - NOISE + 1; equal means every k-gram is kept)
THRESHOLD = 0.8  # pairs whose score reaches it are shown with their code in the HTML report
TOP = 10  # pairs printed, and shown with their code whatever their score


@dataclass
class Work:
    """One student's code for one assignment, the course's code removed, or why there is none."""
    student: str
    code: str = ""
    cells: list[str] = field(default_factory=list)  # grade_ids (or "own cell N") the code came from
    reason: str | None = None  # not compared: why


@dataclass
class Pair:
    a: str
    b: str
    score: float  # the larger of the two shares: the part of one student's code found in the other's
    share_a: float  # of a's fingerprinted code, the fraction that matches b
    share_b: float
    tokens: int  # matching tokens (tokenised characters) in a
    html_a: str = field(default="", repr=False)  # a's code, HTML-escaped, matches highlighted
    html_b: str = field(default="", repr=False)


def given_lines(sources: list[notebooks.SourceNotebook]) -> set[str]:
    """Every stripped line of the released notebooks (the stub included) and of the hidden tests: a student line
    equal to one of them is the course's, not the student's, and the hidden ones must never reach a report."""
    lines = set()
    for src in sources:
        for cell in src.release.cells:
            lines |= {line.strip() for line in cell.source.splitlines()}
        lines |= {line.strip() for line in src.hidden_lines}
    lines.discard("")
    return lines


def given_signatures(sources: list[notebooks.SourceNotebook]) -> set[str]:
    """The ``def``/``class`` lines of the released answer cells: kept in the report as comments (copydetect skips
    comments), so that a reader sees which function a block of code belongs to."""
    return {line.strip() for src in sources for cell in src.release.cells
            if notebooks._nbgrader(cell).get("solution") for line in cell.source.splitlines()
            if line.lstrip().startswith(("def ", "async def ", "class "))}


def _docstring_lines(code: str) -> set[int]:
    """1-based line numbers of module/function/class docstrings that start on a line of their own. Removing them
    whole keeps a half-edited docstring from leaving an open triple quote that would swallow the code after it."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str) and first.lineno > getattr(node, "lineno", 0):
                found |= set(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return found


def student_code(source: str, given: set[str], signatures: Set[str] = frozenset()) -> str:
    """A cell's code without what the course gave (lines equal to a given line, docstrings) and IPython magics;
    a given line in ``signatures`` stays as a comment."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    skip = _docstring_lines("\n".join(lines))
    kept = []
    for n, line in enumerate(lines, 1):
        if n in skip or not line.strip():
            continue
        if line.strip() in signatures:
            kept.append(line[: len(line) - len(line.lstrip())] + "# " + line.strip() + "  (given)")
        elif line.strip() not in given:
            kept.append(line.rstrip())
    return "\n".join(kept)


def _has_code(code: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("#") for line in code.splitlines())


def collect(folder: Path | None, student: str, sources: list[notebooks.SourceNotebook], given: set[str],
            signatures: Set[str] = frozenset()) -> Work:
    """The student's answer cells (and own code cells) of every notebook of the assignment, joined in notebook
    order under a comment naming each cell; or the reason there are none."""
    work, reasons = Work(student), []
    parts = []
    for src in sources:
        path, note = submissions.locate(folder, src.name, tuple(s.name for s in sources if s is not src)) \
            if folder is not None else (None, None)
        if path is None:
            reasons.append(note or f"{src.name}.ipynb was not submitted")
            continue
        cells, why = notebooks.read_submission(str(path))
        if cells is None:
            reasons.append(f"{src.name}.ipynb: {why}")
            continue
        matched = notebooks.match_cells(src, cells)
        if not any(gid in src.answer_ids for gid in matched):  # its own cells would be another exercise's code
            reasons.append(f"{src.name}.ipynb: none of this assignment's answer cells were found (the notebook of "
                           "another assignment?)")
            continue
        for k, (cell, gid) in enumerate(zip(cells, matched, strict=True)):
            if cell.get("cell_type") != "code" or (gid is not None and gid not in src.answer_ids):
                continue  # markdown, and the course's own cells (tests, set-up): never the student's
            code = student_code(notebooks._text(cell.get("source")), given, signatures)
            if _has_code(code):
                name = gid if gid is not None else f"own cell {k + 1}"
                label = name if len(sources) == 1 else f"{src.name}: {name}"
                work.cells.append(label)
                parts.append(f"# ---- {label} ----\n{code}")
    work.code = "\n\n".join(parts) + "\n" if parts else ""
    if not work.code:
        work.reason = "; ".join(reasons) or "no answers: every answer cell is still the template"
    return work


def _marked(code: str, cut) -> str:
    """The code as HTML, the runs in ``cut`` (copydetect's 2 x N array of starts and ends) marked."""
    from copydetect.utils import highlight_overlap

    if cut.ndim != 2 or cut.shape[1] == 0:  # nothing in common
        return html.escape(code)
    return highlight_overlap(code, cut, "<mark>", "</mark>", escape_html=True)[0]


def compare(works: list[Work], boilerplate: str = "", noise: int = NOISE, guarantee: int = GUARANTEE,
            highlight: int = TOP, highlight_from: float = 0.0) -> list[Pair]:
    """Every pair of students with code, ranked by score (then matching tokens). Code in ``boilerplate`` (the
    release's) never counts as a match. The first ``highlight`` pairs and those scoring at least ``highlight_from``
    get their code as HTML, the matching runs marked."""
    from copydetect import CodeFingerprint, compare_files

    if not 1 <= noise <= guarantee:
        raise ValueError(f"expected 1 <= noise <= guarantee, got noise={noise}, guarantee={guarantee}")
    window = guarantee - noise + 1
    given = CodeFingerprint("release.py", noise, 1, language="python", fp=io.StringIO(boilerplate)).hashes \
        if boilerplate.strip() else set()
    prints = {w.student: CodeFingerprint(f"{w.student}.py", noise, window, boilerplate=sorted(given),
                                         language="python", fp=io.StringIO(w.code)) for w in works}
    pairs, slices = [], {}
    for a, b in combinations(sorted(prints), 2):
        tokens, (share_a, share_b), slices[a, b] = compare_files(prints[a], prints[b])
        pairs.append(Pair(a, b, float(max(share_a, share_b)), float(share_a), float(share_b), int(tokens)))
    pairs.sort(key=lambda p: (-p.score, -p.tokens, p.a, p.b))
    for rank, pair in enumerate(pairs):
        if rank < highlight or pair.score >= highlight_from:
            cut_a, cut_b = slices[pair.a, pair.b]
            pair.html_a, pair.html_b = _marked(prints[pair.a].raw_code, cut_a), _marked(prints[pair.b].raw_code, cut_b)
    return pairs


_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1500px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.pair{margin:2em 0;border-top:2px solid #888}
.side{display:grid;grid-template-columns:1fr 1fr;gap:1em}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;
font-size:12.5px;line-height:1.35;white-space:pre}mark{background:#ffd27a}.note{color:#555}"""


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def report_html(assignment: str, pairs: list[Pair], skipped: list[Work], compared: int, threshold: float,
                noise: int, guarantee: int, top: int = TOP) -> str:
    """One self-contained page (no scripts, no external links): the ranked pairs at or above ``threshold`` (the
    first ``top`` at least), each with both students' code side by side and the matching runs marked, then who
    was not compared and why."""
    e = html.escape
    shown = pairs[:max(top, sum(p.score >= threshold for p in pairs))]
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Similarity: {e(assignment)}</title>"
           f"<style>{_STYLE}</style></head><body><h1>Similarity of submissions: {e(assignment)}</h1>",
           f"<p class='note'>{compared} submissions compared ({len(pairs)} pairs); shown: the "
           f"{len(shown)} highest, every pair from {_pct(threshold)} and at least {top}. Score: the larger of "
           "the two shares, i.e. the part of one student's code "
           f"that is also in the other's, measured on copydetect's winnowing fingerprints of the tokenised code "
           f"(names, comments and layout ignored; runs shorter than {noise} tokenised characters ignored, "
           f"guarantee {guarantee}). The course's code (released notebook, template, docstrings) was removed first. "
           "A high score is a reason to look, not proof: short answers to the same exercise look alike.</p>",
           "<table><tr><th>#</th><th>student A</th><th>student B</th><th>score</th><th>A in B</th>"
           "<th>B in A</th><th>matching tokens</th></tr>"]
    for rank, p in enumerate(shown, 1):
        out.append(f"<tr><td class='n'><a href='#pair{rank}'>{rank}</a></td><td>{e(p.a)}</td><td>{e(p.b)}</td>"
                   f"<td class='n'>{_pct(p.score)}</td><td class='n'>{_pct(p.share_a)}</td>"
                   f"<td class='n'>{_pct(p.share_b)}</td><td class='n'>{p.tokens}</td></tr>")
    out.append("</table>")
    for rank, p in enumerate(shown, 1):
        out.append(f"<div class='pair' id='pair{rank}'><h2>{rank}. {e(p.a)} and {e(p.b)}: {_pct(p.score)}</h2>"
                   f"<div class='side'><div><h3>{e(p.a)} ({_pct(p.share_a)} of it matches)</h3><pre>{p.html_a}</pre>"
                   f"</div><div><h3>{e(p.b)} ({_pct(p.share_b)} of it matches)</h3><pre>{p.html_b}</pre></div>"
                   "</div></div>")
    if skipped:
        out.append("<h2>Not compared</h2><ul>")
        out += [f"<li><b>{e(w.student)}</b>: {e(w.reason or '')}</li>" for w in skipped]
        out.append("</ul>")
    out.append("</body></html>\n")
    return "\n".join(out)


def _folders(submitted: Path, assignment: str, every: list[str]) -> dict[str, Path | None]:
    """Student -> their folder for ``assignment`` (None: a student folder without it), as the grader finds them."""
    found: dict[str, Path | None] = {}
    if not submitted.is_dir():
        return found
    for student_dir in sorted(p for p in submitted.iterdir() if p.is_dir() and not p.name.startswith(".")
                              and p.name != "__MACOSX"):
        folders = submissions.assignment_folders(student_dir, every)
        found[student_dir.name] = folders[assignment][0] if assignment in folders else None
    return found


def run(root: str | Path = ".", assignments: list[str] | None = None, out: str | Path | None = None,
        threshold: float = THRESHOLD, noise: int = NOISE, guarantee: int = GUARANTEE,
        top: int = TOP) -> dict[str, dict]:
    """Compare every assignment's submissions and write the reports; returns, per assignment, the paths written,
    the ranked pairs and the students not compared."""
    from .autograde import course_api

    if not 0 <= threshold <= 1:
        raise ValueError(f"expected a threshold between 0 and 1, got {threshold}")
    cd = course_api(root).coursedir
    base = Path(cd.root)
    source_root, release_root = base / cd.source_directory, base / cd.release_directory
    every = sorted(p.name for p in source_root.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))
    unknown = sorted(set(assignments or []) - set(every))
    if unknown:
        raise ValueError(f"expected assignments among {', '.join(every)}, got {', '.join(unknown)}")
    out = Path(out) if out is not None else base / "grading" / "similarity"
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for assignment in assignments or every:
        sources = []
        for path in sorted((source_root / assignment).glob("*.ipynb")):
            release = release_root / assignment / path.name
            if not release.is_file():
                raise FileNotFoundError(f"{release} is missing: the comparison removes the released code, so "
                                        "release the assignment first (make release)")
            sources.append(notebooks.load_source(str(path), str(release)))
        given, signatures = given_lines(sources), given_signatures(sources)
        boilerplate = "\n".join(c.source for s in sources for c in s.release.cells if c.cell_type == "code")
        works = [collect(folder, student, sources, given, signatures)
                 for student, folder in _folders(base / cd.submitted_directory, assignment, every).items()]
        compared, skipped = [w for w in works if not w.reason], [w for w in works if w.reason]
        pairs = compare(compared, boilerplate, noise, guarantee, highlight=top, highlight_from=threshold)
        page = out / f"{assignment}.html"
        page.write_text(report_html(assignment, pairs, skipped, len(compared), threshold, noise, guarantee, top),
                        encoding="utf-8")
        fields = ["a", "b", "score", "share_a", "share_b", "tokens"]
        with open(out / f"{assignment}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["rank", "student_a", "student_b", "score", "a_in_b", "b_in_a", "matching_tokens"])
            writer.writerows([rank, *(getattr(p, f) for f in fields)] for rank, p in enumerate(pairs, 1))
        summary = {"assignment": assignment, "noise": noise, "guarantee": guarantee, "threshold": threshold,
                   "compared": {w.student: w.cells for w in compared},
                   "not_compared": {w.student: w.reason for w in skipped},
                   "pairs": [{f: v for f, v in asdict(p).items() if f in fields} for p in pairs]}
        (out / f"{assignment}.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        results[assignment] = {"html": page, "pairs": pairs, "not_compared": {w.student: w.reason for w in skipped}}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnkit.grading.similarity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="course root holding nbgrader_config.py (default: .)")
    parser.add_argument("--assignment", action="append", help="only this assignment (repeatable; default: all)")
    parser.add_argument("--out", help="folder for the reports (default: grading/similarity under the course root)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help=f"score from which a pair is shown with its code (0..1, default {THRESHOLD})")
    parser.add_argument("--noise", type=int, default=NOISE, help=f"shortest match counted (default {NOISE})")
    parser.add_argument("--guarantee", type=int, default=GUARANTEE,
                        help=f"every match this long is found (>= noise, default {GUARANTEE})")
    parser.add_argument("--top", type=int, default=TOP,
                        help=f"pairs printed, and shown in the report whatever their score (default {TOP})")
    args = parser.parse_args(argv)
    try:
        results = run(args.root, args.assignment, args.out, args.threshold, args.noise, args.guarantee, args.top)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    for assignment, result in results.items():
        pairs = result["pairs"]
        print(f"{assignment}: {len(pairs)} pairs, report {result['html']}")
        for p in pairs[: args.top]:
            print(f"  {p.score:6.1%}  {p.a} ~ {p.b}  ({p.share_a:.0%} / {p.share_b:.0%}, {p.tokens} tokens)")
        for student, why in result["not_compared"].items():
            print(f"  not compared: {student}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
