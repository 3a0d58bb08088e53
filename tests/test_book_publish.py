"""Publishing the course site: `make publish` (ghp-import to a gh-pages branch) and the GitHub Actions workflow.

`make publish` runs in a scratch git repository holding a copy of the Makefile, pushing a small stand-in site to a
local bare repository (no network, and the course repository's own branches are never touched); the workflow files
are checked with actionlint (the ``actionlint`` command of the course extra, a prebuilt binary: no network).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _git(*args, cwd=None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def scratch(tmp_path):
    """A git repository with the course Makefile, a two-file site in _build/html, and an empty bare origin."""
    work, bare = tmp_path / "course", tmp_path / "pages.git"
    work.mkdir()
    _git("init", "-q", "-b", "main", cwd=work)
    _git("init", "-q", "--bare", str(bare))
    _git("remote", "add", "origin", str(bare), cwd=work)  # `make publish` pushes to origin by default
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy2(REPO / name, work / name)
        os.utime(work / name, (0, 0))  # older than the venv's install stamp: make does not reinstall
    (work / "README.md").write_text("course\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    subprocess.run(["git", "add", "."], cwd=work, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "start"], cwd=work, check=True, env=env)
    site = work / "_build" / "html"
    (site / "_static").mkdir(parents=True)
    (site / "index.html").write_text("<html>home v1</html>")
    (site / "_static" / "course.css").write_text("body {}")
    return work, bare, env


def _publish(work: Path, env: dict) -> subprocess.CompletedProcess:
    venv = Path(sys.prefix)
    return subprocess.run(["make", "-s", "publish", f"VENV={venv}"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)


def test_make_publish_pushes_the_site_to_gh_pages(scratch):
    work, bare, env = scratch
    proc = _publish(work, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = _git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "gh-pages").split()
    assert sorted(files) == [".nojekyll", "_static/course.css", "index.html"]
    assert _git("--git-dir", str(bare), "show", "gh-pages:index.html") == "<html>home v1</html>"
    head = _git("rev-parse", "--short", "HEAD", cwd=work).strip()
    assert f"from {head}" in _git("--git-dir", str(bare), "log", "-1", "--format=%s", "gh-pages")
    # a second publish replaces the site (one commit, no stale files), the source branch is untouched
    (work / "_build" / "html" / "index.html").write_text("<html>home v2</html>")
    (work / "_build" / "html" / "_static" / "course.css").unlink()
    assert _publish(work, env).returncode == 0
    assert _git("--git-dir", str(bare), "show", "gh-pages:index.html") == "<html>home v2</html>"
    assert sorted(_git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "gh-pages").split()) == [
        ".nojekyll", "index.html"]
    assert _git("--git-dir", str(bare), "rev-list", "--count", "gh-pages").strip() == "1"
    assert _git("--git-dir", str(bare), "branch", "--list", "main").strip() == ""


def test_make_publish_without_a_built_site_says_so(scratch):
    work, bare, env = scratch
    shutil.rmtree(work / "_build")
    proc = _publish(work, env)
    assert proc.returncode != 0 and "run 'make book' first" in proc.stdout + proc.stderr
    assert _git("--git-dir", str(bare), "branch", "--list").strip() == ""


def _actionlint() -> str:
    exe = shutil.which("actionlint", path=str(BIN)) or shutil.which("actionlint")
    if exe is None:
        pytest.fail("actionlint is missing: `pip install -e '.[course]'` installs it", pytrace=False)
    return exe


def test_workflows_pass_actionlint():
    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert workflows, "no GitHub Actions workflow in .github/workflows"
    proc = subprocess.run([_actionlint(), "-no-color", *map(str, workflows)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The check above can fail: a workflow with an undefined job dependency and a bad expression is rejected."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    needs: missing\n    runs-on: ubuntu-latest\n"
                   "    steps:\n      - run: echo ${{ github.nope }}\n")
    proc = subprocess.run([_actionlint(), "-no-color", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "missing" in proc.stdout


def test_the_workflow_builds_with_make_book_and_deploys_pages():
    text = (REPO / ".github" / "workflows" / "book.yml").read_text()
    for needle in ("run: make book", "actions/upload-pages-artifact", "actions/deploy-pages", "pages: write",
                   "id-token: write", "path: _build/html"):
        assert needle in text, f"book.yml lacks {needle!r}"
