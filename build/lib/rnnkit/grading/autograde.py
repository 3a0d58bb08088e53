"""Autograde every submission safely, inside the nbgrader workflow (``make autograde``, ``make feedback``).

    python -m rnnkit.grading.autograde [--jobs N] [--assignment A ...] [--student S ...] [--db-url URL]
                                       [--cell-timeout S] [--timeout S] [--memory BYTES] [--no-feedback]
    python -m rnnkit.grading.autograde --feedback-only

For every ``<submitted>/<student>/<assignment>/`` (nbgrader's ``CourseDirectory.submitted_directory``):

1. the trusted parent finds the notebook (:mod:`submissions`: a renamed, nested or loosely filed one is graded
   with a note), rebuilds the notebook to run (:func:`notebooks.prepare`: the source's test and locked cells, the
   student's answers, recognised by content when their metadata was lost) into a private folder, with only the
   files the release shipped beside it (a collected tree is first made the grader's alone: :func:`submissions.protect`;
   other files found beside the notebook are reported, never copied);
2. :func:`sandbox.run` executes it in bubblewrap with ``RNNKIT_GRADING_EXPORT`` set, so the hidden
   ``grading.check(...)`` calls only export plain data (``.npz``) — ``N`` sandboxes at once with ``--jobs N``;
3. here, in the parent, each graded cell's checks (names parsed from the SOURCE notebook in ``solutions/``) are
   judged with :func:`rnnkit.grading.judge.compare` on the exports loaded with ``allow_pickle=False``; a cell scores
   ``points x passed checks / checks``, so a crash or a timeout costs only the checks it stopped;
4. scores go into nbgrader's gradebook (any ``db_url``: sqlite or PostgreSQL), one writer (this process) however
   many sandboxes run, keeping manual grades and flags as nbgrader does (:mod:`gradebook`); the autograded
   notebook holds the student's cells and generated verdicts only, so formgrader, ``generate_feedback`` and
   ``export`` keep working and never show hidden tests or expected values;
5. ``grades.csv`` is written with nbgrader's CSV export: one row per student and assignment, always.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import conduct, export, gradebook, judge, notebooks, reasons, sandbox, specs, submissions

KERNEL_START_TRIES = 3  # sandbox runs of a notebook whose kernel never started (a transient failure, not the student's)


def course_api(root: str | Path, **overrides):
    """nbgrader's API for the course at ``root`` (its ``nbgrader_config.py`` if any) with ``Section.option``
    overrides; nbgrader runs ``alembic`` from PATH, so this interpreter's ``bin/`` goes first."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    root = Path(root).resolve()
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    config = Config()
    if (root / "nbgrader_config.py").exists():
        config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    extra = Config()
    extra.CourseDirectory.root = str(root)
    for key, value in overrides.items():
        section, option = key.split(".")
        setattr(extra[section], option, value)
    config.merge(extra)
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


def database_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; the course installs psycopg2 (psycopg2-binary), so
    name that driver explicitly unless psycopg 3 is importable."""
    if url.startswith("postgresql://"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


@dataclass
class Job:
    student: str
    assignment: str
    notebook: str
    source: notebooks.SourceNotebook
    folder: Path  # <submitted>/<student>/<assignment>
    release: Path | None = None  # the assignment's release folder: its files are the only ones beside the notebook
    siblings: tuple[str, ...] = ()  # the assignment's other notebooks: never graded in this one's place
    note: str | None = None  # shown to the student and printed (e.g. the folder was named differently)
    refused: str | None = None  # why the submitted tree cannot be graded safely (see submissions.protect)


@dataclass
class Graded:
    scores: dict[str, float]  # grade_id -> auto_score
    messages: dict[str, str]  # grade_id -> feedback text
    autograded_nb: nbformat.NotebookNode
    seconds: float
    log: str | None = None  # what the instructor should know about this submission (printed)
    manual: set[str] = field(default_factory=set)  # grade_ids an instructor should look at (needs manual grade)


def _judge_export(name: str, data: bytes) -> tuple[float, str]:
    """(score, message) of one check from the sandbox's untrusted bytes."""
    try:
        verdict = judge.compare(name, export.load(data))
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any failure to read is a failed check
        return 0.0, f"{name}: the exported result could not be read as plain data ({type(exc).__name__})"
    return verdict.score, verdict.message


def judge_notebook(job: Job, prepared: nbformat.NotebookNode | None, result: sandbox.Result | None,
                   why_not_run: str | None, limits: sandbox.Limits, note: str | None = None) -> Graded:
    """Trusted: turn the sandbox's exports into scores and generated messages for every graded cell.

    A check first meets its rule statically (:mod:`conduct`: a finding scores 0, a dynamic one also asks for a
    manual grade), then the judge scores its exported cases (the share that pass, 0 for a forbidden call or a
    modified input recorded in the sandbox)."""
    cell_records = result.cell_records() if result else {}
    executed = prepared if prepared is not None else notebooks.prepare(job.source, None)
    index_of = {c.metadata.get("nbgrader", {}).get("grade_id"): i for i, c in enumerate(executed.cells)}
    incidents = reasons.incidents(executed, cell_records, {cell.grade_id for cell in job.source.graded}, limits)
    scrub = notebooks.Scrubber(job.source.hidden_lines)
    answers = set().union(*(notebooks.defined_names(c.source) for c in executed.cells
                            if c.metadata.get("nbgrader", {}).get("solution")))
    found = conduct.findings(job.source, executed) if prepared is not None and not why_not_run else {}
    scores, messages, manual = {}, {}, set()
    for cell in job.source.graded:
        index = index_of.get(cell.grade_id)
        lines, earned = [], 0.0
        for name in cell.checks:
            data = result.export(index, name) if result else None
            if why_not_run:
                score, text = 0.0, f"{name}: not graded — {why_not_run}"
            elif found.get(name):
                score, text = 0.0, conduct.message(name, found[name])
                if conduct.needs_manual_grade(found[name]):
                    manual.add(cell.grade_id)
            elif data is None:
                # every caller that has no sandbox result passes why_not_run (run_job, the pool's fallback)
                assert result is not None
                status = cell_records.get(index) if index is not None else None
                why = reasons.reason(status, result, limits, answers, scrub)
                score, text = 0.0, f"{name}: no result — {why}"
                earlier = [said for i, said in incidents if index is not None and i < index][-3:]
                if earlier:
                    text += "\n     earlier in your notebook: " + "; ".join(earlier)
            else:
                score, text = _judge_export(name, data)
            earned += score
            lines.append(("PASS " if score == 1.0 else "FAIL ") + text)
        score = round(cell.points * earned / len(cell.checks), 4)
        scores[cell.grade_id] = score
        messages[cell.grade_id] = "\n".join(lines) + f"\nScore: {score:g} / {cell.points:g}\n"
    log = note
    if result is not None and reasons.kernel_never_started(result):
        log = "; ".join(filter(None, [note, f"no Python kernel started in {KERNEL_START_TRIES} tries "
                                            f"({reasons.kernel_error(result)}): grade it again "
                                            "(AUTOGRADE_ARGS='--student ... --assignment ...')"]))
    nb = notebooks.autograded(job.source, executed, cell_records, messages, note)
    return Graded(scores, messages, nb, result.seconds if result else 0.0, log, manual)


def run_job(job: Job, limits: sandbox.Limits, slots: queue.Queue, tmp_root: Path) -> Graded:
    """Prepare (trusted), execute (sandbox), judge (trusted) one submitted notebook."""
    if job.refused:
        return judge_notebook(job, None, None, job.refused, limits, job.note)
    path, note = submissions.locate(job.folder, job.notebook, job.siblings)
    why: str | None
    if path is None:
        cells, why = None, note or "the notebook was not submitted"
        note = None
    else:
        cells, why = notebooks.read_submission(str(path))
    note = "; ".join(filter(None, [job.note, note])) or None
    prepared = notebooks.prepare(job.source, cells) if cells is not None else None
    if cells is not None and not any(gid in job.source.answer_ids for gid in notebooks.match_cells(job.source, cells)):
        note = "; ".join(filter(None, [note, "none of this assignment's answer cells were found in the graded "
                                             "notebook: is it the notebook of another assignment?"]))
    result = None
    if prepared is not None:
        work = Path(tempfile.mkdtemp(prefix="rnnkit-grade-", dir=tmp_root))
        try:
            inp = work / "input"
            inp.mkdir()
            if job.release is not None:  # instructor-provided files win, as in nbgrader's autograde
                for item in job.release.rglob("*"):
                    if item.is_file() and item.suffix != ".ipynb" and not item.is_symlink():
                        (inp / item.relative_to(job.release)).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(item, inp / item.relative_to(job.release))
            nbformat.write(prepared, str(inp / f"{job.notebook}.ipynb"))
            for item in [work, *inp.rglob("*")]:
                os.chmod(item, 0o755 if item.is_dir() else 0o644)
            slot = slots.get()
            try:
                for _attempt in range(KERNEL_START_TRIES):  # a kernel that never started ran nothing: try again
                    result = sandbox.run(inp, f"{job.notebook}.ipynb", slot=slot, limits=limits)
                    if not reasons.kernel_never_started(result):
                        break
            finally:
                slots.put(slot)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    graded = judge_notebook(job, prepared, result, why, limits, note)
    if path is not None:  # only the notebook and the release's files went in: say what else was there
        graded.log = "; ".join(filter(None, [graded.log, submissions.unshipped(job.folder, path, job.release,
                                                                              job.siblings)])) or None
    return graded


def discover(api, assignments: list[str] | None, students: list[str] | None, release_dir: Path):
    """(sources by assignment, jobs): releases each assignment into ``release_dir`` with nbgrader (which also
    records its cells in the gradebook) and lists one job per submitted student folder and notebook."""
    cd = api.coursedir
    source_root = Path(cd.root) / cd.source_directory
    every = sorted(p.name for p in source_root.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))
    names = [n for n in every if not assignments or n in assignments]
    sources: dict[str, list[notebooks.SourceNotebook]] = {}
    for name in names:
        result = api.generate_assignment(name, force=True, create=True)
        if not result.get("success"):
            raise RuntimeError(f"nbgrader generate_assignment {name} failed:\n{result.get('error')}\n"
                               f"{result.get('log')}")
        sources[name] = [notebooks.load_source(str(p), str(release_dir / name / p.name))
                         for p in sorted((source_root / name).glob("*.ipynb"))]
    submitted = Path(cd.root) / cd.submitted_directory
    owner = submissions.grader_owner(Path(cd.root))
    jobs, all_students = [], []
    if submitted.is_dir():
        submissions.protect(submitted, owner, recursive=False)
        # folders here come from `nbgrader collect` (the instructor's side): follow them even if linked, so that no
        # student is ever skipped; inside a submission nothing is followed (see notebooks.read_submission)
        for student_dir in sorted(p for p in submitted.iterdir() if p.is_dir() and not p.name.startswith(".")
                                  and p.name != "__MACOSX"):  # a zip tool's folder (unzipped bulk downloads)
            if students and student_dir.name not in students:
                continue
            all_students.append(student_dir.name)
            refused = submissions.protect(student_dir, owner)
            folders = submissions.assignment_folders(student_dir, every)
            for name in names:
                if name in folders:
                    folder, note = folders[name]
                    jobs += [Job(student_dir.name, name, src.name, src, folder, release_dir / name,
                                 tuple(s.name for s in sources[name] if s is not src), note, refused)
                             for src in sources[name]]
    return sources, jobs, all_students


def autograde(root: str | Path = ".", *, jobs: int = 1, assignments: list[str] | None = None,
              students: list[str] | None = None, db_url: str | None = None, limits: sandbox.Limits | None = None,
              export_to: str | Path | None = "grading/grades.csv", feedback: bool = True,
              progress: bool = True) -> dict:
    """Grade everything found; returns {"graded": n, "seconds": [(job, sandbox seconds), ...], "export": path}."""
    from nbgrader.api import Gradebook
    from tqdm import tqdm

    sandbox.check_available()
    if not specs.FIXTURE_DIR.is_dir():  # the judge compares with them; without, it would judge live values only
        raise RuntimeError(f"no stored expected values in {specs.FIXTURE_DIR} (run `make fixtures`, or set "
                           "RNNKIT_FIXTURES to the folder that holds them)")
    # nbgrader's own add_submission trips SQLAlchemy's autoflush warning on every new submission (harmless)
    warnings.filterwarnings("ignore", message=".*not in session.*")
    with tempfile.TemporaryDirectory(prefix="rnnkit-autograde-") as tmp:
        tmp_root = Path(tmp)
        os.chmod(tmp_root, 0o755)
        overrides = {"CourseDirectory.release_directory": str(tmp_root / "release")}
        if db_url:
            overrides["CourseDirectory.db_url"] = database_url(db_url)
        api = course_api(root, **overrides)
        limits = limits or sandbox.Limits(cell_timeout=float(api.config.Execute.get("timeout", 60) or 60))
        sources, todo, all_students = discover(api, assignments, students, tmp_root / "release")
        slots: queue.Queue = queue.Queue()
        for k in range(max(1, jobs)):
            slots.put(k)
        seconds = []
        with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
            for student in all_students:  # every student gets a row in the export, whatever happens next
                gb.update_or_create_student(student)
            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                futures = {pool.submit(run_job, job, limits, slots, tmp_root): job for job in todo}
                bar = tqdm(as_completed(futures), total=len(futures), desc="autograde", unit="notebook",
                           disable=not progress, file=sys.stderr)
                for future in bar:
                    job = futures[future]
                    try:
                        graded = future.result()
                    except Exception as exc:  # noqa: BLE001 - a grader bug must not lose the student
                        why = f"the grader failed on this submission ({type(exc).__name__}: {exc}); " \
                              "ask your instructor"
                        graded = judge_notebook(job, None, None, why, limits)
                        print(f"autograde: {job.student}/{job.assignment}: {why}", file=sys.stderr)
                    if graded.log:
                        print(f"autograde: {job.student}/{job.assignment}: {graded.log}", file=sys.stderr)
                    try:
                        gradebook.write(gb, api.coursedir, job.student, job.assignment, job.notebook, job.folder,
                                        graded.scores, graded.autograded_nb, needs_manual=graded.manual)
                    except Exception as exc:  # noqa: BLE001 - the other students' grades must still be written
                        gb.db.rollback()
                        print(f"autograde: {job.student}/{job.assignment}: NOT WRITTEN to the gradebook "
                              f"({type(exc).__name__}: {exc})", file=sys.stderr)
                    seconds.append((f"{job.student}/{job.assignment}/{job.notebook}", round(graded.seconds, 2)))
                    bar.set_postfix_str(f"{job.student}/{job.assignment}")
            if export_to:  # relative paths are under the course root
                export_to = gradebook.export_csv(gb, Path(root, export_to), sorted(sources), api.coursedir)
        if feedback and todo:
            generate_feedback(api, sorted({j.assignment for j in todo}), students)
        gradebook.hand_back(root)
    return {"graded": len(todo), "seconds": seconds, "export": export_to}


def generate_feedback(api, assignments: list[str] | None = None, students: list[str] | None = None) -> None:
    """nbgrader's generate_feedback (HTML from the autograded notebooks and the gradebook): one nbgrader run per
    assignment, or per (assignment, student) when only some students were graded (a student with no autograded
    copy of that assignment, i.e. who did not submit it, is skipped: nbgrader would fail on them)."""
    autograded = Path(api.coursedir.root) / api.coursedir.autograded_directory
    if assignments is None:
        assignments = sorted({a.name for s in autograded.iterdir() if s.is_dir()
                              for a in s.iterdir() if a.is_dir()}) if autograded.is_dir() else []
    everyone: list[str | None] = [None]   # student_id=None: one nbgrader run for all students
    for assignment in assignments:
        for student in students or everyone:
            if student is not None and not (autograded / student / assignment).is_dir():
                continue
            result = api.generate_feedback(assignment, student_id=student, force=True)
            if not result.get("success"):
                print(f"feedback {assignment} {student or '(all students)'} failed: {result.get('error')}",
                      file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnkit.grading.autograde", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="course root holding nbgrader_config.py (default: .)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS", "1")), help="sandboxes at once")
    parser.add_argument("--assignment", action="append", help="only this assignment (repeatable)")
    parser.add_argument("--student", action="append", help="only this student (repeatable)")
    parser.add_argument("--db-url", help="gradebook URL (default: nbgrader_config.py's), e.g. postgresql://...")
    parser.add_argument("--cell-timeout", type=float, help="seconds per cell (default: Execute.timeout)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per submitted notebook")
    parser.add_argument("--memory", type=int, default=sandbox.Limits.memory, help="bytes of address space")
    parser.add_argument("--export", help="CSV file to write (default: grading/grades.csv under the course root, "
                                         "next to the rest of the grading state)")
    parser.add_argument("--no-feedback", action="store_true", help="skip generating feedback HTML")
    parser.add_argument("--feedback-only", action="store_true", help="only (re)generate feedback, grade nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--report", help="write per-notebook sandbox seconds and totals to this JSON file")
    args = parser.parse_args(argv)
    if args.feedback_only:  # and grades.csv, which may have changed by hand since (formgrader)
        api = course_api(args.root, **({"CourseDirectory.db_url": database_url(args.db_url)} if args.db_url else {}))
        generate_feedback(api, args.assignment, args.student)
        gradebook.main(["--root", args.root, *(["--db-url", args.db_url] if args.db_url else []),
                        *(["--export", args.export] if args.export else [])])
        return 0
    limits = None
    if args.cell_timeout or args.timeout or args.memory:
        api = course_api(args.root)
        cell_timeout = args.cell_timeout or float(api.config.Execute.get("timeout", 60) or 60)
        limits = sandbox.Limits(cell_timeout=cell_timeout, submission_timeout=args.timeout, memory=args.memory)
    started = time.monotonic()
    export_to = Path(args.export).resolve() if args.export else Path(args.root) / "grading" / "grades.csv"
    summary = autograde(args.root, jobs=args.jobs, assignments=args.assignment, students=args.student,
                        db_url=args.db_url, limits=limits, export_to=export_to, feedback=not args.no_feedback,
                        progress=not args.quiet)
    elapsed = time.monotonic() - started
    n = summary["graded"]
    if args.report:
        Path(args.report).write_text(json.dumps({"jobs": args.jobs, "notebooks": n, "seconds_total": elapsed,
                                                 "sandbox_seconds": summary["seconds"]}, indent=1))
    print(f"autograded {n} notebooks in {elapsed:.1f} s with {args.jobs} job(s)"
          + (f" ({elapsed / n:.2f} s each)" if n else "") + f"; grades in {summary['export']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
