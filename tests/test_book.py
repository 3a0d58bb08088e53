"""The course site: a clean zero-warning Jupyter Book build, then a real browser (headless Chromium) on every page.

The build starts from an empty output folder (an incremental ``-W`` rebuild can miss warnings). To keep `make test`
fast it reuses the notebook *execution* cache of the repo's own ``_build/.jupyter_cache`` when one exists (Sphinx
still reads and writes every page from scratch, so every warning is seen); set ``RNNKIT_BOOK_COLD=1`` to execute
every chapter again. Chromium is found at ``$RNNKIT_CHROMIUM`` or ``/usr/bin/chromium`` (``make system-deps``);
without it the browser tests FAIL with a message saying how to install it -- they never skip silently.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

pytestmark = [pytest.mark.book, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("RNNKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--no-first-run"]
# nbgrader's markers: none of these may reach the site
LEAK_MARKERS = ["BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"]
# pages Sphinx generates that are not course content (still checked for leaks, not driven in the browser)
GENERATED = {"genindex.html", "py-modindex.html", "search.html"}


# ----------------------------------------------------------------------------------------------------------------------
# build


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the book from an empty output folder; return the path of the HTML site."""
    out = tmp_path_factory.mktemp("book")
    repo_cache = REPO / "_build" / ".jupyter_cache"
    if repo_cache.is_dir() and not os.environ.get("RNNKIT_BOOK_COLD"):
        shutil.copytree(repo_cache, out / "_build" / ".jupyter_cache")
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(REPO), "-W", "-n", "--keep-going", "--path-output", str(out)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1200)
    elapsed = time.perf_counter() - started
    log = proc.stdout + proc.stderr
    (out / "build.log").write_text(log)
    print(f"book build: {elapsed:.1f} s (log {out / 'build.log'})")
    warnings = [line for line in log.splitlines() if re.search(r"\bWARNING:|\bERROR:|\bCRITICAL:", line)]
    assert proc.returncode == 0 and not warnings, (
        f"`{' '.join(cmd)}` failed (exit {proc.returncode}) or warned:\n" + "\n".join(warnings[:40])
        + "\n--- tail of the log ---\n" + log[-4000:])
    html = out / "_build" / "html"
    assert (html / "index.html").is_file(), f"no index.html in {html}"
    return html


def _pages(html: Path) -> list[Path]:
    skip_dirs = {"_static", "_sources", "_images", "_downloads", "_modules"}
    return sorted(p for p in html.rglob("*.html") if not skip_dirs & set(p.relative_to(html).parts[:-1]))


def test_every_toc_entry_has_a_page(site):
    toc = (REPO / "_toc.yml").read_text()
    for name in re.findall(r"file:\s*(\S+)", toc):
        assert (site / f"{name}.html").is_file(), f"_toc.yml lists {name} but the site has no {name}.html"


def _notebook_sources(root: Path) -> dict[Path, str]:
    """Every cell source of the notebooks under ``root`` (checkpoints skipped), one string per notebook."""
    sources = {}
    for nb_path in sorted(root.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in nb_path.parts:
            continue
        try:
            nb = json.loads(nb_path.read_text())
        except (OSError, ValueError) as err:
            pytest.fail(f"cannot read notebook {nb_path}: {err}")
        sources[nb_path] = "\n".join("".join(cell.get("source", [])) for cell in nb.get("cells", []))
    return sources


def _solution_snippets() -> list[str]:
    """Distinctive lines of the instructors' solutions and hidden tests (solutions/**/*.ipynb).

    Lines that the released exercises (exercises/) also contain -- a recipe spelled out in the task, a given helper --
    are public by design and skipped; so are short lines (`return h`), which chapters may legitimately contain.
    """
    released = "\n".join(_notebook_sources(REPO / "exercises").values())
    snippets = set()
    for src in _notebook_sources(REPO / "solutions").values():
        for block in re.findall(r"BEGIN (SOLUTION|HIDDEN TESTS)(.*?)END \1", src, flags=re.S):
            for line in block[1].splitlines():
                line = line.strip()
                if len(line) >= 40 and not line.startswith("#") and line not in released:
                    snippets.add(line)
    return sorted(snippets)


def test_no_solution_or_hidden_test_text_anywhere_on_the_site(site):
    snippets = _solution_snippets()
    offenders = []
    for path in site.rglob("*"):
        if not path.is_file() or path.suffix not in {".html", ".txt", ".js", ".ipynb", ".md", ".json", ".py"}:
            continue
        if "_static" in path.relative_to(site).parts:  # third-party JS/CSS
            continue
        text = path.read_text(errors="replace")
        for marker in LEAK_MARKERS + snippets:
            if marker in text:
                offenders.append(f"{path.relative_to(site)}: {marker[:60]!r}")
    assert not offenders, "solution / hidden-test text on the site:\n" + "\n".join(offenders[:20])


# ----------------------------------------------------------------------------------------------------------------------
# browser


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    missing: list[str] = []  # every path the site asked for that does not exist (checked by the browser tests)

    def log_message(self, *args):  # keep pytest output readable
        pass

    def send_error(self, code, message=None, explain=None):
        _QuietHandler.missing.append(f"HTTP {code}: {self.path}")
        try:
            super().send_error(code, message, explain)
        except (BrokenPipeError, ConnectionResetError):  # the page was closed before the error page was sent
            pass


@pytest.fixture(scope="module")
def server(site):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: install it with `make system-deps` "
                    "(Debian: apt-get install chromium chromium-driver) or set RNNKIT_CHROMIUM", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        pytest.fail(f"playwright is missing ({err}); `pip install -e '.[course]'` installs it", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, url):
    """Open ``url`` in a fresh page and collect every console error, uncaught exception and failed local request."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}")
            if urlparse(r.url).hostname == "127.0.0.1" else None)
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.goto(url, wait_until="networkidle")
    return page, problems


def _assert_nothing_missing():
    missing, _QuietHandler.missing[:] = sorted(set(_QuietHandler.missing)), []
    assert not missing, "the pages requested files the site does not have:\n" + "\n".join(missing)


_WAIT_MATHJAX = """async () => {
  if (!document.querySelector('.math')) return 'no math';
  for (let i = 0; i < 100 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++)
    await new Promise(r => setTimeout(r, 100));
  if (!(window.MathJax && MathJax.startup)) return 'MathJax never loaded';
  await MathJax.startup.promise;
  return 'ok';
}"""

_IMAGES = """async () => {
  const out = [];
  for (const img of document.querySelectorAll('img')) {
    img.loading = 'eager';
    try { await img.decode(); } catch (e) {}
    out.push([img.currentSrc || img.src, img.naturalWidth]);
  }
  return out;
}"""


def test_every_page_in_headless_chromium(site, server, browser):
    pages = [p for p in _pages(site) if p.name not in GENERATED]
    assert len(pages) >= 8, f"expected the whole book, found only {len(pages)} pages"
    failures = []
    n_math = n_images = 0
    for path in pages:
        rel = path.relative_to(site).as_posix()
        page, problems = _open(browser, urljoin(server, rel))
        try:
            if page.evaluate("() => !!document.querySelector('meta[http-equiv=\"refresh\"]')"):
                continue  # index.html only redirects to the root document
            state = page.evaluate(_WAIT_MATHJAX)
            if state not in ("ok", "no math"):
                problems.append(state)
            if state == "ok":
                unrendered = page.evaluate(
                    "() => [...document.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container'))"
                    ".map(e => e.textContent.slice(0, 60))")
                problems += [f"formula not rendered by MathJax: {t!r}" for t in unrendered]
                n_math += page.evaluate("() => document.querySelectorAll('mjx-container').length")
            text = page.inner_text("article") if page.query_selector("article") else page.inner_text("body")
            if "$$" in text:
                problems.append("raw $$ in the page text (math not parsed)")
            for src, width in page.evaluate(_IMAGES):
                n_images += 1
                if not width:
                    problems.append(f"image did not load: {src}")
        finally:
            page.close()
        failures += [f"{rel}: {p}" for p in problems]
    assert not failures, "browser problems:\n" + "\n".join(failures[:40])
    _assert_nothing_missing()
    assert n_math > 0, "no rendered formula anywhere: is MathJax served (sphinx-mathjax-offline)?"
    assert n_images > 0, "no image on any page: the chapters' figures are missing"


def test_sidebar_links_resolve_and_screenshots(site, server, browser):
    page, problems = _open(browser, server)  # index.html redirects to the root document
    try:
        page.wait_for_selector("nav.bd-links a", timeout=15000)
        hrefs = page.evaluate("() => [...document.querySelectorAll('nav.bd-links a')].map(a => a.href)")
        assert len(hrefs) >= 8, f"sidebar has only {len(hrefs)} links"
        shots = REPO / "_build" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "home.png"), full_page=False)
        bad = []
        for href in sorted(set(hrefs)):
            if urlparse(href).hostname != "127.0.0.1":
                continue
            resp = page.request.get(href.split("#")[0])
            if resp.status != 200:
                bad.append(f"{href}: HTTP {resp.status}")
        assert not bad, "sidebar links that do not resolve:\n" + "\n".join(bad)
        assert not problems, "\n".join(problems)
        chapter, chapter_problems = _open(browser, urljoin(server, "book/03_lstm.html"))
        chapter.evaluate(_WAIT_MATHJAX)
        chapter.screenshot(path=str(shots / "chapter_03_lstm.png"), full_page=False)
        chapter.close()
        assert not chapter_problems, "\n".join(chapter_problems)
        for name in ("home.png", "chapter_03_lstm.png"):
            assert (shots / name).stat().st_size > 10_000, f"screenshot {name} looks empty"
        _assert_nothing_missing()
    finally:
        page.close()


def test_search_finds_a_chapter_for_forget_gate(site, server, browser):
    page, problems = _open(browser, urljoin(server, "search.html?q=forget+gate"))
    try:
        page.wait_for_function(
            "() => document.querySelectorAll('#search-results li').length > 0 || "
            "/did not match|no results/i.test((document.querySelector('#search-results') || {}).innerText || '')",
            timeout=30000)
        links = page.evaluate("() => [...document.querySelectorAll('#search-results li a')].map(a => a.href)")
        assert any(re.search(r"/book/0[1-6]_\w+\.html", h) for h in links), (
            f"search for 'forget gate' returned no chapter: {links}")
        assert not problems, "\n".join(problems)
        _assert_nothing_missing()
    finally:
        page.close()
