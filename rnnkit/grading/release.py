"""Generate the student release ``exercises/`` from ``solutions/`` with nbgrader's Python API, normalised so that
regenerating it gives byte-identical files (``make release``; the tests regenerate into a temporary folder and
compare with the committed ``exercises/``).

    python -m rnnkit.grading.release                 # solutions/* -> exercises/* (and the gradebook's copy)
    python -m rnnkit.grading.release --into DIR      # write the release into DIR instead, with a throw-away gradebook

nbgrader's CLI prints errors and still exits 0 in places (jupyter/nbgrader#1908), so this module uses
:class:`nbgrader.apps.NbGraderAPI` and raises when a step reports ``success: False``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_CONTROL_HEADER = re.compile(r"^(for|while|if|elif|else|with|try|except|def|class)\b.*:$")
CONFIG_FILE = REPO_ROOT / "nbgrader_config.py"


def assignments(root: Path = REPO_ROOT) -> list[str]:
    """The assignment ids: every folder ``solutions/NN_name`` holding a notebook."""
    return sorted(p.name for p in (root / "solutions").iterdir()
                  if p.is_dir() and not p.name.startswith((".", "_")) and any(p.glob("*.ipynb")))


def nbgrader_api(**overrides):
    """An :class:`NbGraderAPI` configured by the repo's ``nbgrader_config.py``; ``overrides`` maps
    ``"Section.option"`` to a value (e.g. ``{"CourseDirectory.db_url": "sqlite:////tmp/x.db"}``)."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    # nbgrader runs `alembic` from PATH to create the gradebook: put this interpreter's bin/ first
    bin_dir = str(Path(sys.executable).parent)
    if not os.environ.get("PATH", "").startswith(bin_dir + os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    config = PyFileConfigLoader(CONFIG_FILE.name, path=str(CONFIG_FILE.parent)).load_config()
    extra = Config()
    for key, value in overrides.items():
        section, option = key.split(".")
        setattr(extra[section], option, value)
    config.merge(extra)
    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir=coursedir, config=config)


def _ok(result: dict, what: str) -> None:
    if not result.get("success"):
        raise RuntimeError(f"nbgrader {what} failed:\n{result.get('error', '')}\n{result.get('log', '')}")


def normalise_notebook(path: Path) -> None:
    """Rewrite a released notebook canonically: no outputs or execution counts, sorted keys, fixed indent."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def generate(into: Path | None = None, names: list[str] | None = None, *, db_url: str | None = None) -> list[Path]:
    """Release every assignment (or ``names``) into ``into`` (default: the course's ``exercises/``).

    With ``into`` given, the assignments are recorded in ``db_url`` (default: a throw-away gradebook), so the
    course's ``grading/gradebook.db`` is untouched. Returns the notebooks written."""
    names = names or assignments()
    with tempfile.TemporaryDirectory(prefix="rnnkit-release-") as tmp:
        overrides = {}
        if into is not None:
            overrides = {"CourseDirectory.release_directory": str(Path(into).resolve()),
                         "CourseDirectory.db_url": db_url or f"sqlite:///{tmp}/gradebook.db"}
        elif db_url is not None:
            overrides = {"CourseDirectory.db_url": db_url}
        api = nbgrader_api(**overrides)
        release_root = Path(api.coursedir.root) / api.coursedir.release_directory
        written = []
        for name in names:
            _ok(api.generate_assignment(name, force=True, create=True), f"generate_assignment {name}")
            for notebook in sorted((release_root / name).glob("*.ipynb")):
                normalise_notebook(notebook)
                written.append(notebook)
    return written


def solution_lines(source: str | Path) -> set[str]:
    """The substantial lines (16+ characters, stripped, not a bare ``for ...:`` / ``if ...:`` header) found only inside the solution and hidden-test regions of a
    source notebook: none of them may appear in the release, on the course site or in feedback."""
    nb = json.loads(Path(source).read_text(encoding="utf-8"))
    lines, outside, inside = set(), set(), False
    for cell in nb["cells"]:
        text = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        for line in text.splitlines():
            marker = line.strip()
            if marker.startswith("### BEGIN SOLUTION") or marker.startswith("### BEGIN HIDDEN TESTS"):
                inside = True
            elif marker.startswith("### END SOLUTION") or marker.startswith("### END HIDDEN TESTS"):
                inside = False
            elif inside and len(marker) >= 16 and not _CONTROL_HEADER.match(marker):
                lines.add(marker)
            elif not inside:
                outside.add(marker)
    return lines - outside  # a line the students also see elsewhere (e.g. a loop header in a test) is no secret


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnkit.grading.release", description=__doc__.split("\n\n")[0])
    parser.add_argument("--into", type=Path, help="write the release here instead of exercises/")
    parser.add_argument("assignment", nargs="*", help="assignment ids (default: all under solutions/)")
    args = parser.parse_args(argv)
    for path in generate(args.into, args.assignment or None):
        print(f"released {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
