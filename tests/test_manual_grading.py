"""What the humans did in the formgrader survives `make autograde`, as it survives nbgrader's own autograde: a manual
score stays (and is marked for review), `flagged` stays; grades.csv can be refreshed from the gradebook without
re-grading; the files nbgrader's release_feedback needs reach feedback/. The sandbox is replaced by a stub that
exports nothing (every check fails): these tests are about what is written, test_hostile.py runs the sandbox."""
from __future__ import annotations

import datetime
import os

import grading_cases as gc
import nbformat
import pytest

from rnnkit.grading import autograde, gradebook, sandbox


@pytest.fixture
def stub_sandbox(monkeypatch):
    monkeypatch.setattr(autograde.sandbox, "check_available", lambda: None)
    monkeypatch.setattr(autograde.sandbox, "run", lambda *a, **k: sandbox.Result(records={"done.json": b"{}"}))


def _db(course):
    return f"sqlite:///{course}/grading/gradebook.db"


def _grade(course, **kwargs):
    kwargs.setdefault("feedback", False)
    return autograde.autograde(course, db_url=_db(course), export_to="grades.csv", progress=False, **kwargs)


def _course(tmp_path, names=("01_rnn",)):
    course = gc.make_course(tmp_path / "course", list(names))
    gc.submit(course, "ann", "01_rnn", gc.correct_notebook("01_rnn"))
    return course


def test_regrading_keeps_manual_scores_flags_and_marks_them_for_review(tmp_path, stub_sandbox):
    from nbgrader.api import Gradebook

    course = _course(tmp_path)
    _grade(course)
    first, other = sorted(gc.points("01_rnn"))[:2]
    with Gradebook(_db(course), "rnnkit") as gb:
        gb.find_grade(first, "01_rnn", "01_rnn", "ann").manual_score = 1.5
        gb.find_submission_notebook("01_rnn", "01_rnn", "ann").flagged = True
        gb.db.commit()
    _grade(course)
    with Gradebook(_db(course), "rnnkit") as gb:
        manual = gb.find_grade(first, "01_rnn", "01_rnn", "ann")
        assert (manual.manual_score, manual.auto_score, manual.score) == (1.5, 0.0, 1.5)
        assert manual.needs_manual_grade  # as nbgrader's SaveAutoGrades: a human's score is up for review again
        assert not gb.find_grade(other, "01_rnn", "01_rnn", "ann").needs_manual_grade
        assert gb.find_submission_notebook("01_rnn", "01_rnn", "ann").flagged
    assert float(gc.read_export(course / "grades.csv")[("ann", "01_rnn")]["score"]) == 1.5


def test_record_scores_marks_what_the_autograder_could_not_decide():
    class Grade:
        def __init__(self, name, manual=None):
            self.name, self.manual_score, self.auto_score, self.needs_manual_grade = name, manual, None, True

    class Notebook:
        grades = [Grade("a"), Grade("b", manual=2.0), Grade("c"), Grade("untouched")]

    nb = Notebook()
    gradebook.record_scores(nb, {"a": 1.0, "b": 0.0, "c": 0.5}, needs_manual={"c"})
    assert [(g.auto_score, g.needs_manual_grade) for g in nb.grades] == [(1.0, False), (0.0, True), (0.5, True),
                                                                          (None, True)]


def test_make_feedback_and_make_export_refresh_grades_csv_from_the_gradebook(tmp_path, stub_sandbox):
    """grades.csv showed the old score until the next `make autograde` after a grade was given by hand."""
    from nbgrader.api import Gradebook

    course = _course(tmp_path)
    _grade(course)
    csv = course / "grading" / "grades.csv"
    grade_id = sorted(gc.points("01_rnn"))[0]
    for score, command in ((2.0, "export"), (1.0, "feedback")):
        with Gradebook(_db(course), "rnnkit") as gb:
            gb.find_grade(grade_id, "01_rnn", "01_rnn", "ann").manual_score = score
            gb.db.commit()
        if command == "export":  # make export
            assert gradebook.main(["--root", str(course), "--db-url", _db(course)]) == 0
        else:  # make feedback
            assert autograde.main(["--root", str(course), "--db-url", _db(course), "--feedback-only"]) == 0
        assert float(gc.read_export(csv)[("ann", "01_rnn")]["score"]) == score


def test_a_hand_copied_submission_is_dated_by_its_file_time(tmp_path, stub_sandbox):
    course = _course(tmp_path)
    when = datetime.datetime(2026, 11, 2, 10, 30, tzinfo=datetime.timezone.utc)
    notebook = course / "grading" / "submitted" / "ann" / "01_rnn" / "01_rnn.ipynb"
    os.utime(notebook, (when.timestamp(), when.timestamp()))
    _grade(course)
    assert gc.read_export(course / "grades.csv")[("ann", "01_rnn")]["timestamp"].startswith("2026-11-02 10:30:00")
    stamp = course / "grading" / "autograded" / "ann" / "01_rnn" / "timestamp.txt"
    assert stamp.read_text().startswith("2026-11-02 10:30:00")
    # the formgrader lists it as autograded (it compares the submission's timestamp.txt, none, with the gradebook's)
    [row] = autograde.course_api(course, **{"CourseDirectory.db_url": _db(course)}).get_submissions("01_rnn")
    assert row["autograded"] and row["timestamp"] is None, row
    assert not (notebook.parent / "timestamp.txt").exists()  # the submission itself is left as it was


def test_release_feedback_finds_the_submission_secret(tmp_path, stub_sandbox):
    """nbgrader release_feedback names each feedback file by a hash of the student's submission_secret.txt; it
    crashed (FileNotFoundError) because the secret never reached autograded/ and so feedback/."""
    course = _course(tmp_path)
    folder = course / "grading" / "submitted" / "ann" / "01_rnn"
    (folder / "submission_secret.txt").write_text("ab" * 64)
    (folder / "timestamp.txt").write_text("2026-11-02 10:30:00.000000 UTC")
    _grade(course, feedback=True)
    feedback = course / "grading" / "feedback" / "ann" / "01_rnn"
    assert (feedback / "submission_secret.txt").read_text() == "ab" * 64
    assert (feedback / "01_rnn.html").is_file()
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    api = autograde.course_api(course, **{"Exchange.root": str(exchange), "CourseDirectory.db_url": _db(course)})
    result = api.release_feedback("01_rnn", "ann")
    assert result["success"], result.get("error")
    released = list((exchange / "rnnkit" / "feedback").glob("*.html"))
    assert len(released) == 1


def test_two_students_with_different_assignments_get_feedback_without_tracebacks(tmp_path, stub_sandbox, capfd):
    """--student ann --student bob, who handed in different assignments: nbgrader was asked for bob's 01_rnn
    feedback (and ann's 02) and printed two NbGraderException tracebacks."""
    course = gc.make_course(tmp_path / "course", ["01_rnn", "02_gradients"])
    gc.submit(course, "ann", "01_rnn", gc.correct_notebook("01_rnn"))
    gc.submit(course, "bob", "02_gradients", gc.correct_notebook("02_gradients"))
    assert autograde.main(["--root", str(course), "--db-url", _db(course), "--student", "ann", "--student", "bob",
                           "--quiet", "--export", str(course / "grades.csv")]) == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err and "No notebooks were matched" not in err
    name_02 = gc.source_notebook("02_gradients")[0]
    assert (course / "grading" / "feedback" / "ann" / "01_rnn" / "01_rnn.html").is_file()
    assert (course / "grading" / "feedback" / "bob" / "02_gradients" / f"{name_02}.html").is_file()
    assert {k for k in gc.read_export(course / "grades.csv")} >= {("ann", "01_rnn"), ("bob", "02_gradients")}


def test_the_grading_output_goes_back_to_the_course_owner(tmp_path, stub_sandbox):
    """make autograde runs as root; the formgrader's buttons run as the grader account that owns the course root."""
    if os.geteuid() != 0:
        pytest.skip("needs root (make autograde's account on the grading machine) to change owners")
    course = _course(tmp_path)
    os.chown(course, 65534, 65534)
    _grade(course)
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in (course / "grading").rglob("*") if not p.is_symlink()}
    assert owners == {(65534, 65534)}
    notebook = course / "grading" / "autograded" / "ann" / "01_rnn" / "01_rnn.ipynb"
    assert nbformat.read(str(notebook), as_version=4).cells
