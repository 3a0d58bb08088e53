"""The autograder's writes to nbgrader's gradebook and course folders, made the way nbgrader's own autograde makes them.

* :func:`write` stores one graded notebook: automatic scores, the autograded notebook, ``timestamp.txt`` and the
  student's ``submission_secret.txt`` (``nbgrader release_feedback`` names each feedback file by a hash of it).
  A human's work survives re-grading as in nbgrader's ``SaveAutoGrades``: a manual score is kept (and marks the cell
  ``needs_manual_grade`` again, for review), the formgrader's ``flagged`` mark and comments are never touched.
* :func:`export_csv` writes ``grades.csv`` (nbgrader's CSV export: one row per student and assignment) from the
  gradebook as it is now, manual grades included (``make export``; ``make feedback`` and ``make autograde`` call it).
* :func:`hand_back`: ``make autograde`` runs as root (each sandbox gets its own uid), but the course root belongs
  to the grader account that runs the formgrader, release, collect and release_feedback: everything written under
  ``grading/`` is given back to that account, or its buttons fail with "Permission denied".

    python -m rnnkit.grading.gradebook [--root .] [--db-url URL] [--export grading/grades.csv]
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import sys
from pathlib import Path

import nbformat

MAX_SECRET_BYTES = 4096  # nbgrader writes 128 hex digits; the file comes from the student's side of the exchange


def collected_time(coursedir, folder: Path) -> datetime.datetime | None:
    """When the exchange says the work was handed in (its ``timestamp.txt``, UTC), or None."""
    try:
        return coursedir.get_existing_timestamp(str(folder)) or None
    except Exception:  # noqa: BLE001 - timestamp.txt comes with the submission: a hand-copied one may hold anything
        # (nbgrader's reader raises, then fails on its own error path: it stopped the whole batch)
        print(f"autograde: {folder.parent.name}/{folder.name}: timestamp.txt is not a date, the notebook's file "
              "time is used", file=sys.stderr)
        return None


def file_time(folder: Path) -> datetime.datetime | None:
    """When a submission copied in by hand was last changed (UTC): its newest notebook, else the folder itself."""
    times = [p.lstat().st_mtime for p in folder.rglob("*.ipynb") if p.is_file() and not p.is_symlink()]
    try:
        seconds = max(times) if times else folder.lstat().st_mtime
    except OSError:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).replace(tzinfo=None)


def record_scores(submitted_notebook, scores: dict[str, float], needs_manual: set[str] | frozenset = frozenset()):
    """Automatic scores into one submitted notebook's grades, as nbgrader's SaveAutoGrades does: a grade a human
    has scored (``manual_score``) keeps that score and is marked for review; ``needs_manual`` names grades the
    autograder could not decide. ``flagged`` and comments belong to the humans and are left alone."""
    for grade in submitted_notebook.grades:
        if grade.name in scores:
            grade.auto_score = scores[grade.name]
            grade.needs_manual_grade = grade.manual_score is not None or grade.name in needs_manual


def write(gb, coursedir, student: str, assignment: str, notebook: str, folder: Path,
          scores: dict[str, float], autograded_nb, needs_manual: set[str] | frozenset = frozenset()) -> None:
    """One graded notebook into the gradebook and ``autograded/<student>/<assignment>/`` (with ``timestamp.txt``
    and ``submission_secret.txt``, which generate_feedback carries on into ``feedback/``, where release_feedback
    reads both). The gradebook keeps the exchange's date only, as nbgrader does (the formgrader compares it with the
    submission's own ``timestamp.txt``); a submission copied in by hand is dated by its file time in
    ``autograded/`` and so in ``grades.csv`` (:func:`export_csv`)."""
    collected = collected_time(coursedir, folder)
    dated = collected or file_time(folder)
    gb.update_or_create_student(student)
    gb.update_or_create_submission(assignment, student, **({"timestamp": collected} if collected else {}))
    record_scores(gb.find_submission_notebook(notebook, assignment, student), scores, needs_manual)
    gb.db.commit()
    dest = Path(coursedir.format_path(coursedir.autograded_directory, student, assignment))
    dest.mkdir(parents=True, exist_ok=True)
    nbformat.write(autograded_nb, str(dest / f"{notebook}.ipynb"))
    if dated:
        (dest / "timestamp.txt").write_text(str(dated))
    secret = folder / "submission_secret.txt"
    if secret.is_file() and not secret.is_symlink() and secret.stat().st_size <= MAX_SECRET_BYTES:
        (dest / "submission_secret.txt").write_bytes(secret.read_bytes())


def export_csv(gb, to: str | Path, assignments: list[str] | None = None, coursedir=None) -> str:
    """``grades.csv`` from the gradebook as it is now (nbgrader's CsvExportPlugin), every assignment by default.
    With ``coursedir``, a row with no timestamp (a submission copied in by hand) gets the date the autograder
    used, from ``autograded/<student>/<assignment>/timestamp.txt``."""
    from nbgrader.plugins.export import CsvExportPlugin

    to = Path(to).resolve()
    to.parent.mkdir(parents=True, exist_ok=True)
    CsvExportPlugin(to=str(to), assignment=list(assignments or [])).export(gb)
    if coursedir is not None:
        with open(to, newline="") as fh:
            reader = csv.DictReader(fh)
            fields, rows = reader.fieldnames or (), list(reader)
        for row in rows:
            stamp = Path(coursedir.format_path(coursedir.autograded_directory, row["student_id"],
                                               row["assignment"])) / "timestamp.txt"
            if not row["timestamp"] and stamp.is_file():
                row["timestamp"] = stamp.read_text().strip()
        with open(to, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    return str(to)


def hand_back(root: str | Path, grading: str = "grading") -> None:
    """When run as root, give ``<root>/<grading>`` and everything in it to the course root's owner (the grader
    account); a no-op otherwise, or when root owns the course root (development, CI)."""
    root = Path(root).resolve()
    owner = root.stat()
    if os.geteuid() != 0 or owner.st_uid == 0:
        return
    top = root / grading
    if not top.is_dir() or top.is_symlink():
        return
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [None, *dirnames, *filenames]:
            path = dirpath if name is None else os.path.join(dirpath, name)
            os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def main(argv: list[str] | None = None) -> int:
    from nbgrader.api import Gradebook

    from .autograde import course_api, database_url

    parser = argparse.ArgumentParser(prog="python -m rnnkit.grading.gradebook",
                                     description="Refresh grades.csv from the gradebook (manual grades included).")
    parser.add_argument("--root", default=".", help="course root holding nbgrader_config.py (default: .)")
    parser.add_argument("--db-url", help="gradebook URL (default: nbgrader_config.py's)")
    parser.add_argument("--export", help="CSV file to write (default: grading/grades.csv under the course root)")
    args, _ = parser.parse_known_args(argv)  # `make export` passes AUTOGRADE_ARGS: the grading options are not ours
    api = course_api(args.root, **({"CourseDirectory.db_url": database_url(args.db_url)} if args.db_url else {}))
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        to = export_csv(gb, args.export or Path(args.root) / "grading" / "grades.csv", coursedir=api.coursedir)
    hand_back(args.root)
    print(f"grades in {to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
