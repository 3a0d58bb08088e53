"""Where a student's work is in a submitted folder. Submissions copied by hand (from a learning platform, a zip, a
browser download) are untidy: a renamed notebook, a notebook one folder down, an assignment folder named
"01_RNN". A human grader would grade what was handed in, so the grader does too, and says so in a note; what it
cannot place is listed, never silently scored 0. Only names are read here; nothing is executed or followed.
"""
from __future__ import annotations

import os
import re
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

    found = {name: (student_dir / name, None) for name in every if (student_dir / name).is_dir()}
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
