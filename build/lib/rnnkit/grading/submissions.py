"""Where a student's work is in a submitted folder. Submissions copied by hand (from a learning platform, a zip, a
browser download) are untidy: a renamed notebook, a notebook one folder down, an assignment folder named
"01_RNN". A human grader would grade what was handed in, so the grader does too, and says so in a note; what it
cannot place is listed, never silently scored 0. Only names are read here; nothing is executed or followed.

Collected work is protected before it is read (:func:`protect`): nbgrader's collect leaves folders writable by
every account, so one student could plant a ``torch.py`` beside another's notebook. The tree is made the grader's
alone, and only the notebook and the files the release shipped go into the sandbox (:func:`unshipped` lists the
rest for the instructor).
"""
from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path


def shown(file_name: str) -> str:
    """A student's file name made safe to show inside markdown code (it is theirs: it could hold HTML or `)."""
    return re.sub(r"[^\w .()/+-]", "?", file_name)[:80]


def _nested(folder: Path, lower_name: str, depth: int) -> list[Path]:
    """Regular files called ``lower_name`` (any case) in the sub-folders of ``folder``, ``depth`` levels down at
    most; hidden folders and zip tools' ``__MACOSX`` are not looked into, links are not followed."""
    hits: list[Path] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)[:1000]
    except OSError:
        return hits
    for entry in entries:
        if entry.name.startswith(".") or entry.name == "__MACOSX" or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            inside = sorted(os.scandir(entry.path), key=lambda e: e.name)[:1000]
        except OSError:
            continue
        hits += [Path(e.path) for e in inside if e.name.lower() == lower_name and e.is_file(follow_symlinks=False)]
        if depth > 1:
            hits += _nested(Path(entry.path), lower_name, depth - 1)
    return hits


def locate(folder: Path, name: str, siblings: tuple[str, ...] = ()) -> tuple[Path | None, str | None]:
    """The file to grade as ``<name>.ipynb`` and a note, or (None, why). Students rename notebooks ("01_rnn (1)
    .ipynb" from a browser download, "01_rnn-Copy1.ipynb", "Untitled.ipynb"): a human grader would grade the one
    notebook they handed in, so when ``<name>.ipynb`` is missing the only other notebook is graded (or the only one
    whose name contains ``name``); with several and no clear choice, the reason lists them."""
    expected = folder / f"{name}.ipynb"
    if os.path.lexists(expected):
        return expected, None
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return None, None
    found = [e for e in entries if e.lower().endswith(".ipynb") and not e.startswith(".") and e[:-6] not in siblings
             and not (folder / e).is_symlink() and (folder / e).is_file()]
    if not found:  # an unzipped upload ("01_rnn/01_rnn.ipynb", "hw1/01_rnn/01_rnn.ipynb"): the notebook by name
        nested = _nested(folder, f"{name}.ipynb".lower(), depth=2)
        if len(nested) == 1:
            where = shown(str(nested[0].relative_to(folder)))
            return nested[0], f"`{name}.ipynb` was not at the top of your submission, so `{where}` was graded"
    close = [e for e in found if name.lower() in e.lower()]
    chosen = found if len(found) == 1 else close if len(close) == 1 else []
    if chosen:
        return folder / chosen[0], f"`{name}.ipynb` was not in your submission, so `{shown(chosen[0])}` was " \
                                   "graded in its place"
    if found:
        listing = ", ".join(shown(e) for e in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        return None, f"the notebook {name}.ipynb was not submitted (the folder holds {listing}: name the one to " \
                     f"grade {name}.ipynb)"
    return None, None


def assignment_folders(student_dir: Path, every: list[str]) -> dict[str, tuple[Path, str | None]]:
    """Assignment -> (its folder in one student's submission, note). Hand-copied submissions name folders freely
    ("01_RNN", "01-rnn"): the one folder equal to an assignment's name up to case and separators is taken, with a
    note; any other folder or notebook there is reported on stderr, never silently left ungraded."""
    def key(name: str) -> str:
        return re.sub(r"[^0-9a-z]", "", name.casefold())

    found: dict[str, tuple[Path, str | None]] = {
        name: (student_dir / name, None) for name in every if (student_dir / name).is_dir()}
    try:
        entries = sorted(e for e in os.listdir(student_dir) if not e.startswith(".") and e not in found)
    except OSError:
        entries = []
    for entry in entries:
        alike = [n for n in every if n not in found and key(n) == key(entry)]
        if (student_dir / entry).is_dir() and len(alike) == 1 and sum(key(e) == key(entry) for e in entries) == 1:
            found[alike[0]] = (student_dir / entry, f"your folder `{shown(entry)}` was graded as "
                                                    f"assignment {alike[0]}")
        elif (student_dir / entry).is_dir() or entry.endswith(".ipynb"):
            print(f"autograde: {student_dir.name}: {entry!r} is not an assignment folder (expected "
                  f"{student_dir.name}/<assignment>/ with <assignment> one of {', '.join(every)}): not graded",
                  file=sys.stderr)
    return found


def grader_owner(root: Path) -> tuple[int, int]:
    """(uid, gid) of the account that owns the course root: the grader account (formgrader, collect)."""
    info = root.stat()
    return info.st_uid, info.st_gid


def protect(folder: Path, owner: tuple[int, int], recursive: bool = True) -> str | None:
    """Make ``folder`` (and, if ``recursive``, everything in it) the grader's alone: owned by ``owner`` (when run as
    root) and mode 0700 (folders) / 0600 (files), so no other account can add, replace or change a file between
    collect and grading. Returns None, or why it could not be done (not root, and a file belongs to another account,
    who could change it back): that submission is then not graded, and the reason is printed for the instructor.
    Links are neither followed nor changed (the grader never follows them), nor are files with several hard links
    (changing one would change a file elsewhere on the machine: collect copies, so only a hand-made tree has them)."""
    uid, gid = owner
    root = os.geteuid() == 0
    foreign = []
    for _pass in range(2):  # the first pass locks every folder; the second sees entries added before it did
        paths: list[Path | str] = [folder, *(_walk(folder) if recursive else [])]
        for path in paths:
            try:
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode) or (not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1):
                    continue  # a link's target, or an inode shared with a path elsewhere, is not the grader's
                if root and (info.st_uid, info.st_gid) != (uid, gid):
                    os.chown(path, uid, gid, follow_symlinks=False)
                elif not root and info.st_uid != os.geteuid():
                    foreign.append(str(path))
                    continue
                mode = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
                if stat.S_IMODE(info.st_mode) != mode:
                    os.chmod(path, mode)
            except FileNotFoundError:
                continue
    if not foreign:
        return None
    listing = ", ".join(shown(str(Path(p).relative_to(folder.parent))) for p in sorted(set(foreign))[:5])
    print(f"autograde: {folder.name}: not graded: {listing} belong to another account, which could change them "
          f"while they are graded; run make autograde as root (it takes them over) or chown them to the grader",
          file=sys.stderr)
    return "your submission could not be graded safely (its files belong to another account): a grading problem, " \
           "your instructor was told"


def _walk(folder: Path) -> list[str]:
    paths = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        paths += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return paths


def unshipped(folder: Path, notebook: Path, release: Path | None, siblings: tuple[str, ...] = ()) -> str | None:
    """What the instructor should know about the other files in a submission: none of them reaches the sandbox
    (only the graded notebook and the release's files do), so a helper module a student wrote is not importable
    there, and a file planted beside someone's notebook cannot change how it runs."""
    known = {"timestamp.txt", "submission_secret.txt", *(f"{s}.ipynb" for s in siblings)}
    extra = []
    for path in map(Path, _walk(folder)):
        rel = path.relative_to(folder)
        if path == notebook or not path.is_file() or path.is_symlink() or str(rel) in known \
                or any(part.startswith(".") or part == "__MACOSX" for part in rel.parts) \
                or (release is not None and (release / rel).is_file()):
            continue
        extra.append(shown(str(rel)))
    if not extra:
        return None
    listing = ", ".join(sorted(extra)[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
    return f"not copied into the sandbox (only the notebook and the release's files are): {listing}"
