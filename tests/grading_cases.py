"""Builders for the grading tests (not a test module): a throw-away nbgrader course made from the REAL assignments,
the notebook a correct student would submit, hostile variants of it, generated batches, and the `make autograde` call.

The full scale check (100 generated submissions x every assignment, sequential vs JOBS=2) is a command,
too slow for `make test` on 2 cores:

    .venv/bin/python tests/grading_cases.py scale --students 100 --jobs 2
"""
from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rnnkit.grading import notebooks  # noqa: E402


def assignments() -> list[str]:
    return sorted(p.name for p in (REPO / "solutions").iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def make_course(dest: Path, names: list[str]) -> Path:
    """A course folder with the repo's nbgrader_config.py and the given assignments' sources."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "nbgrader_config.py", dest / "nbgrader_config.py")
    for name in names:
        shutil.copytree(REPO / "solutions" / name, dest / "solutions" / name, dirs_exist_ok=True)
    (dest / "grading" / "submitted").mkdir(parents=True, exist_ok=True)
    return dest


def source_notebook(assignment: str) -> tuple[str, nbformat.NotebookNode]:
    path = sorted((REPO / "solutions" / assignment).glob("*.ipynb"))[0]
    return path.stem, nbformat.read(str(path), as_version=4)


def visible_cells(name: str, solution_id: str, replace: tuple[str, str]):
    """(nbgrader metadata, compiled visible code) of each code cell of the source notebook, hidden tests removed, with
    one line of the solution cell ``solution_id`` replaced."""
    nb = json.loads((REPO / "solutions" / name / f"{name}.ipynb").read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        md = cell.get("metadata", {}).get("nbgrader", {})
        source = "".join(cell["source"])
        if md.get("grade_id") == solution_id:
            assert replace[0] in source, replace[0]
            source = source.replace(*replace)
        source = re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", "", source, flags=re.S)  # visible part
        yield md, compile(source, f"<{md.get('grade_id', 'cell')}>", "exec")


def run_visible(name: str, grade_id: str, solution_id: str, replace: tuple[str, str], *,
                earlier_may_fail: bool = False) -> str:
    """Run the notebook's cells in-process up to the test cell ``grade_id`` (its visible part only), with one line of
    the solution cell ``solution_id`` replaced; return the visible test's AssertionError message ('' if it passed).
    ``earlier_may_fail``: an earlier test cell's failing assert is passed over (a student runs on by hand)."""
    namespace: dict = {}
    for md, code in visible_cells(name, solution_id, replace):
        try:
            exec(code, namespace)
        except AssertionError as exc:
            if md.get("grade_id") == grade_id:
                return str(exc)
            if not (earlier_may_fail and md.get("grade")):
                raise
        if md.get("grade_id") == grade_id:
            return ""
    raise AssertionError(f"no cell {grade_id}")


def answer_functions(name: str, solution_id: str, replace: tuple[str, str], runs, stop_after: str | None = None
                     ) -> dict:
    """The namespace after running, in-process, the source notebook's code cells whose nbgrader metadata ``runs``
    accepts (no test cells, no training), with the cell ``solution_id``'s text replaced, up to ``stop_after``."""
    _, nb = source_notebook(name)
    namespace: dict = {}
    for cell in nb.cells:
        md = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and runs(md):
            source = cell.source.replace(*replace) if md.get("grade_id") == solution_id else cell.source
            exec(compile(source, md["grade_id"], "exec"), namespace)
            if md["grade_id"] == stop_after:
                break
    return namespace


def verdict(check: str, obj):
    """The trusted judge's verdict on ``obj`` for the graded check ``check``, as the grader reaches it."""
    from rnnkit.grading import export, judge, specs

    return judge.compare(check, export.collect(specs.get(check), obj))


def need_sandbox() -> None:
    """Skip where the grading sandbox cannot run here; in CI it must run, so fail there instead."""
    import pytest

    from rnnkit.grading import sandbox

    try:
        sandbox.check_available()
    except sandbox.SandboxUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the grading sandbox must work in CI: {exc}")
        pytest.skip(str(exc))


def _strip(source: str, begin: str, end: str) -> str:
    out, inside = [], False
    for line in source.splitlines():
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def correct_notebook(assignment: str) -> nbformat.NotebookNode:
    """What a student who solved everything submits: the source without hidden tests, solutions kept (no markers)."""
    _, nb = source_notebook(assignment)
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        md = cell.metadata.get("nbgrader", {})
        if md.get("solution"):
            cell.source = "\n".join(line for line in cell.source.splitlines()
                                    if "BEGIN SOLUTION" not in line and "END SOLUTION" not in line)
        elif md.get("grade") and cell.cell_type == "code":
            cell.source = _strip(cell.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
    return nb


def blank_solution(assignment: str, grade_id: str) -> str:
    """The solution cell as released (the solution region replaced by nbgrader's stub)."""
    _, nb = source_notebook(assignment)
    cell = find(nb, grade_id)
    lines, inside = [], False
    for line in cell.source.splitlines():
        if "BEGIN SOLUTION" in line:
            inside = True
            lines.append(line[: len(line) - len(line.lstrip())] + "raise NotImplementedError()")
        elif "END SOLUTION" in line:
            inside = False
        elif not inside:
            lines.append(line)
    return "\n".join(lines)


def clean_export(name: str, obj=None) -> dict:
    """The export a rule-abiding student with the reference's results would send: ``obj`` (default: the spec's
    trusted reference, which itself may call rnnkit) run unguarded, with guard records saying nothing forbidden was
    called and nothing was changed."""
    import numpy as np

    from rnnkit.grading import export, guard, specs

    spec = specs.get(name)
    if obj is None:
        obj = spec.reference() if spec.kind == "value" else spec.reference
    exported = export.collect(spec, obj, guarded=False)
    if spec.kind == "function":
        exported["function"] = np.array(name)
        for i in range(int(exported["cases"])):
            exported.update(guard.CallRecord([], True).export(f"c{i}.guard."))
            exported[f"c{i}.changed"] = np.array([], dtype=np.str_)
    return exported


def find(nb, grade_id: str):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return cell
    raise KeyError(grade_id)


def index_of(nb, grade_id: str) -> int:
    return nb.cells.index(find(nb, grade_id))


def points(assignment: str) -> dict[str, float]:
    """grade_id -> points of every autograded test cell."""
    _, nb = source_notebook(assignment)
    return {c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"].get("points") or 0) for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")}


def points_of_check(assignment: str, check: str) -> float:
    """Points of the test cells that call grading.check(check, ...)."""
    _, nb = source_notebook(assignment)
    total = 0.0
    for cell in nb.cells:
        md = cell.metadata.get("nbgrader", {})
        if md.get("grade") and not md.get("solution") and check in notebooks.check_names(cell.source):
            total += float(md.get("points") or 0)
    return total


def submit(course: Path, student: str, assignment: str, nb=None, raw: bytes | None = None, name: str | None = None):
    folder = course / "grading" / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    name = name or source_notebook(assignment)[0]
    if raw is not None:
        (folder / f"{name}.ipynb").write_bytes(raw)
    elif nb is not None:
        nbformat.write(nb, str(folder / f"{name}.ipynb"))
    return folder


def make_autograde(course: Path, jobs: int = 1, db_url: str | None = None, export: str = "grades.csv",
                   cell_timeout: float = 15, timeout: float = 240, feedback: bool = True,
                   memory: int | None = None, report: Path | None = None) -> subprocess.CompletedProcess:
    """The real path: `make autograde JOBS=N AUTOGRADE_ARGS=...` from the repository root."""
    args = [f"--root={course}", f"--export={course / export}", f"--cell-timeout={cell_timeout:g}",
            f"--timeout={timeout:g}", "--quiet"]
    if db_url:
        args.append(f"--db-url={db_url}")
    if not feedback:
        args.append("--no-feedback")
    if memory:
        args.append(f"--memory={memory}")
    if report:
        args.append(f"--report={report}")
    # -o: the venv is set up already (make test did it); never reinstall in the middle of a test
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "-o", ".venv/.installed-stamp",
                           "autograde", f"JOBS={jobs}",
                           "AUTOGRADE_ARGS=" + " ".join(args)], capture_output=True, text=True)


def read_export(path: Path) -> dict[tuple[str, str], dict]:
    with open(path, newline="") as fh:
        return {(row["student_id"], row["assignment"]): row for row in csv.DictReader(fh)}


def grade_batch(assignment: str, submissions: dict, jobs: int) -> dict[str, float]:
    """Grade ``{student: (notebook, expected score, words the feedback must contain)}`` as ``make autograde`` does,
    in the sandbox, and check every score and feedback word; prints and returns the sandbox seconds per student."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"rnnkit-{assignment[:3]}-") as tmp:
        course = make_course(Path(tmp) / "course", [assignment])
        for student, (nb, _, _) in submissions.items():
            submit(course, student, assignment, nb)
        started = time.monotonic()
        done = make_autograde(course, jobs=jobs, db_url=f"sqlite:///{course}/grading/gradebook.db", cell_timeout=60,
                              timeout=240, report=Path(tmp) / "report.json")
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        rows = read_export(course / "grades.csv")
        seconds = dict(json.loads((Path(tmp) / "report.json").read_text())["sandbox_seconds"])
        print(f"\n{assignment[:2]} sandbox seconds per submission: {seconds}; "
              f"batch of {len(submissions)} with JOBS={jobs}: {elapsed:.0f} s")
        for student, (_, score, words) in submissions.items():
            row = rows[(student, assignment)]
            assert abs(float(row["score"]) - score) < 1e-6, (student, row)
            path = course / "grading" / "autograded" / student / assignment / f"{assignment}.ipynb"
            feedback = "\n".join(json.dumps(c.get("outputs", [])) for c in nbformat.read(str(path), as_version=4).cells
                                 if c.cell_type == "code")
            for word in words:
                assert word in feedback, f"{student}: feedback lacks {word!r}"
        return seconds


def gradebook_scores(db_url: str, course_id: str = "rnnkit") -> dict[tuple[str, str, str], float]:
    """(student, assignment, grade_id) -> auto_score for every grade in the gradebook."""
    from nbgrader.api import Gradebook

    from rnnkit.grading.autograde import database_url

    out = {}
    with Gradebook(database_url(db_url), course_id) as gb:
        for assignment in gb.assignments:
            for sub in gb.assignment_submissions(assignment.name):
                for nb in sub.notebooks:
                    for grade in nb.grades:
                        out[(sub.student.id, assignment.name, grade.name)] = grade.auto_score
    return out


def tree_digest(root: Path) -> str:
    """Digest of every file (path, mode, bytes) under root: proves nothing there changed."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or path.is_file():
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes() if path.is_file() else os.readlink(path).encode())
    return h.hexdigest()


def generated_batch(course: Path, names: list[str], students: int, seed: int = 0) -> None:
    """Students whose solution cells are each, at random, correct or the blank release stub."""
    rng = random.Random(seed)
    for assignment in names:
        base = correct_notebook(assignment)
        solution_ids = [c.metadata["nbgrader"]["grade_id"] for c in base.cells
                        if c.metadata.get("nbgrader", {}).get("solution")]
        for k in range(students):
            nb = copy.deepcopy(base)
            for gid in solution_ids:
                if rng.random() < 0.4:
                    find(nb, gid).source = blank_solution(assignment, gid)
            submit(course, f"student{k:03d}", assignment, nb)


def scale(students: int, jobs: int, names: list[str] | None, workdir: Path) -> dict:
    """Sequential vs JOBS=N on the same generated batch: both exports and every auto_score must be identical."""
    names = names or assignments()
    course = make_course(workdir, names)
    generated_batch(course, names, students)
    timings, exports, scores, per_assignment = {}, {}, {}, {}
    for label, n in (("sequential", 1), (f"jobs{jobs}", jobs)):
        db = f"sqlite:///{course}/grading/{label}.db"
        started = time.monotonic()
        done = make_autograde(course, jobs=n, db_url=db, export=f"{label}.csv", feedback=False, cell_timeout=60,
                              timeout=600, report=course / f"{label}.json")
        timings[label] = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(done.stdout + done.stderr)
        per = {}
        for job, seconds in json.loads((course / f"{label}.json").read_text())["sandbox_seconds"]:
            per.setdefault(job.split("/")[1], []).append(seconds)
        per_assignment[label] = {a: round(sum(v) / len(v), 2) for a, v in sorted(per.items())}
        exports[label] = read_export(course / f"{label}.csv")
        scores[label] = gradebook_scores(db)
    a, b = list(exports.values()), list(scores.values())
    notebooks_graded = students * len(names)
    return {"notebooks": notebooks_graded, "identical_export": a[0] == a[1], "identical_scores": b[0] == b[1],
            "rows": len(a[0]), **{f"{k}_s_per_notebook": round(v / notebooks_graded, 2) for k, v in timings.items()},
            "sandbox_s_per_notebook_by_assignment": per_assignment}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("scale", help="sequential vs parallel autograde on generated submissions")
    p.add_argument("--students", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--assignment", action="append")
    p.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rnnkit-scale-") as tmp:
        print(json.dumps(scale(args.students, args.jobs, args.assignment, args.workdir or Path(tmp)), indent=1))


if __name__ == "__main__":
    main()
