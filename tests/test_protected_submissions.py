"""Collected work belongs to the grader before it is graded, and nothing but the notebook and the release's files
reaches the sandbox. nbgrader's collect leaves submitted folders writable by every account: a student planted a
torch.py beside a classmate's correct notebook and the victim scored 0/10 ("setup raised SystemExit"). And
nbgrader's own autograde, which would run the notebook unsandboxed and write the hidden tests into the feedback,
refuses with a message naming `make autograde`."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import grading_cases as gc
import pytest

from rnnkit.grading import autograde, sandbox, submissions


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.lstat().st_mode) for p in [folder, *folder.rglob("*")]}


def _open_tree(tmp_path) -> Path:
    folder = tmp_path / "submitted" / "bob" / "01_rnn"
    (folder / "sub").mkdir(parents=True)
    (folder / "01_rnn.ipynb").write_text("{}")
    (folder / "sub" / "data.txt").write_text("x")
    for path in [folder.parent, folder, folder / "sub"]:
        os.chmod(path, 0o777)
    for path in [folder / "01_rnn.ipynb", folder / "sub" / "data.txt"]:
        os.chmod(path, 0o666)
    (folder / "link").symlink_to("/etc/passwd")
    outside = folder.parents[2] / "outside.txt"  # a file elsewhere, hard-linked into the submission
    outside.write_text("not the student's")
    os.chmod(outside, 0o644)
    os.link(outside, folder / "hard.txt")
    return folder


def test_a_world_writable_submission_is_made_the_graders_alone(tmp_path):
    folder = _open_tree(tmp_path)
    owner = (os.geteuid(), os.getegid()) if os.geteuid() else (65534, 65534)
    assert submissions.protect(folder.parent, owner) is None
    assert _modes(folder.parent) == {".": 0o700, "01_rnn": 0o700, "01_rnn/sub": 0o700, "01_rnn/01_rnn.ipynb": 0o600,
                                     "01_rnn/sub/data.txt": 0o600, "01_rnn/link": 0o777, "01_rnn/hard.txt": 0o644}
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in [folder.parent, *folder.parent.rglob("*")]
              if not p.is_symlink() and p.name != "hard.txt"}
    assert owners == {owner}
    assert os.readlink(folder / "link") == "/etc/passwd"  # links are never followed, so never changed either
    outside = folder.parents[2] / "outside.txt"  # nor is a file hard-linked from elsewhere
    assert (outside.stat().st_uid, stat.S_IMODE(outside.stat().st_mode)) == (os.geteuid(), 0o644)


def test_without_root_another_accounts_file_is_refused(tmp_path, monkeypatch, capsys):
    """Not root, the grader cannot take a file over, and its owner could change it back at any time: the
    submission is not graded (the student is told it is a grading problem, the instructor what to do)."""
    folder = _open_tree(tmp_path)
    me = os.geteuid() + 4242  # every file here now belongs to "someone else"
    monkeypatch.setattr(submissions.os, "geteuid", lambda: me)
    why = submissions.protect(folder.parent, (me, me))
    assert why is not None and "could not be graded safely" in why
    err = capsys.readouterr().err
    assert "bob: not graded" in err and "belong to another account" in err and "run make autograde as root" in err


def test_other_files_in_a_submission_are_listed_not_copied(tmp_path):
    folder = tmp_path / "01_rnn"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    for name in ["01_rnn.ipynb", "torch.py", "timestamp.txt", "submission_secret.txt", ".ipynb_checkpoints/x.ipynb",
                 "data.csv"]:
        (folder / name).write_text("x")
    release = tmp_path / "release"
    release.mkdir()
    (release / "data.csv").write_text("instructor's")
    said = submissions.unshipped(folder, folder / "01_rnn.ipynb", release)
    assert said == "not copied into the sandbox (only the notebook and the release's files are): torch.py"
    (folder / "torch.py").unlink()
    assert submissions.unshipped(folder, folder / "01_rnn.ipynb", release) is None


@pytest.mark.slow
def test_a_planted_torch_py_beside_a_classmates_notebook_changes_nothing(tmp_path, capfd):
    """The attack as it happened: bob's folder was 0777 after collect, eve put torch.py (raise SystemExit) beside
    his notebook. Bob's correct work gets full marks; the folder is 0700 afterwards; the instructor hears of it."""
    try:
        sandbox.check_available()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(f"no sandbox here: {exc}")
    course = gc.make_course(tmp_path / "course", ["01_rnn"])
    folder = gc.submit(course, "bob", "01_rnn", gc.correct_notebook("01_rnn"))
    gc.submit(course, "eve", "01_rnn", gc.correct_notebook("01_rnn"))
    for path in [course / "grading" / "submitted", folder.parent, folder]:
        os.chmod(path, 0o777)
    (folder / "torch.py").write_text("raise SystemExit('sabotaged by eve')\n")
    os.chmod(folder / "torch.py", 0o666)
    autograde.autograde(course, db_url=f"sqlite:///{course}/grading/gradebook.db", export_to="grades.csv",
                        feedback=False, progress=False, limits=sandbox.Limits(cell_timeout=60, submission_timeout=240))
    rows = gc.read_export(course / "grades.csv")
    total = sum(gc.points("01_rnn").values())
    assert float(rows[("bob", "01_rnn")]["score"]) == total, rows
    assert float(rows[("eve", "01_rnn")]["score"]) == total
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((course / "grading" / "submitted").stat().st_mode) == 0o700
    err = capfd.readouterr().err
    assert "bob/01_rnn: not copied into the sandbox (only the notebook and the release's files are): torch.py" in err


def _nbgrader_course(tmp_path):
    course = gc.make_course(tmp_path / "course", ["01_rnn"])
    gc.submit(course, "ann", "01_rnn", gc.correct_notebook("01_rnn"))
    return course


def _untouched(course):
    assert not (course / "grading" / "autograded").exists()
    db = course / "grading" / "gradebook.db"
    if db.exists():  # nothing about ann was written
        assert set(gc.gradebook_scores(f"sqlite:///{db}")) == set()


def test_the_nbgrader_autograde_command_refuses_and_names_make_autograde(tmp_path):
    course = _nbgrader_course(tmp_path)
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    done = subprocess.run([str(Path(sys.executable).parent / "nbgrader"), "autograde", "01_rnn"], cwd=course,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "make autograde" in done.stdout + done.stderr
    _untouched(course)


def test_the_formgrader_autograde_button_refuses_and_names_make_autograde(tmp_path):
    """The button's handler calls NbGraderAPI.autograde(assignment, student) with force=True (the end-to-end test
    presses the button itself, through the hub)."""
    course = _nbgrader_course(tmp_path)
    result = autograde.course_api(course).autograde("01_rnn", "ann")
    assert not result["success"]
    assert "make autograde" in result["log"]
    _untouched(course)
