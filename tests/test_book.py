"""The course site: a clean zero-warning Jupyter Book build, then a real browser (headless Chromium) on every page.

The build starts from an empty output folder (an incremental ``-W`` rebuild can miss warnings). To keep `make test`
fast it reuses the notebook *execution* cache of the repo's own ``_build/.jupyter_cache`` when one exists (Sphinx
still reads and writes every page from scratch, so every warning is seen); set ``RNNKIT_BOOK_COLD=1`` to execute
every chapter again. Chromium is found at ``$RNNKIT_CHROMIUM`` or ``/usr/bin/chromium`` (``make system-deps``);
without it the browser tests FAIL with a message saying how to install it -- they never skip silently.
"""

from __future__ import annotations

import functools
import html as html_lib
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


# ----------------------------------------------------------------------------------------------------------------------
# layout: nothing in the main column is wider than the column, at a laptop, a large laptop and a phone size

VIEWPORTS = {"1280x800": (1280, 800), "1440x900": (1440, 900), "390x844": (390, 844)}
# the only boxes allowed to scroll sideways: wide tables always; on a phone also displayed equations and code
_SCROLL_BOXES = ".pst-scrollable-table-container, .table-wrapper"
_PHONE_SCROLL_BOXES = _SCROLL_BOXES + ", .math, pre, div.highlight"

_OVERFLOW = """(scrollBoxes) => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });     // folded code and answers count too
  document.querySelectorAll('button.toggle-button-hidden').forEach(b => b.click());  // folded answers open
  const col = document.querySelector('article.bd-article');
  if (!col) return ['no article.bd-article on the page'];
  const box = col.getBoundingClientRect();
  const out = [];
  const describe = (el) => {
    const cls = (el.className && el.className.baseVal === undefined ? el.className : '').toString().split(' ')[0];
    return `<${el.tagName.toLowerCase()}${cls ? '.' + cls : ''}> "${(el.textContent || '').trim().slice(0, 50)}"`;
  };
  if (col.scrollWidth > col.clientWidth + 1) out.push(`the column scrolls: ${col.scrollWidth} > ${col.clientWidth} px`);
  for (const el of col.querySelectorAll('*')) {
    if (el.closest('mjx-container')) continue;                              // MathJax's own layout: judged below
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;                          // not rendered (closed, hidden)
    const cs = getComputedStyle(el);
    if (cs.visibility === 'hidden' || cs.position === 'fixed') continue;
    const scroller = el.closest(scrollBoxes);
    const inside = scroller && scroller !== el;                             // content of an allowed scroll box
    if (inside) continue;
    if (el === scroller) continue;                                          // the allowed box itself may scroll
    const math = el.matches('.math') && el.querySelector('mjx-container');
    if (math) {                     // a formula: MathJax's box must fit its element (scrollWidth counts glyph overhang)
      const need = math.getBoundingClientRect().width;
      if (need > el.clientWidth + 1)
        out.push(`${describe(el)}: formula ${Math.round(need)} px wide in ${el.clientWidth} px`);
      else if (r.right > box.right + 1 || r.left < box.left - 1)
        out.push(`${describe(el)} spans ${Math.round(r.left)}..${Math.round(r.right)} px, ` +
                 `outside the column ${Math.round(box.left)}..${Math.round(box.right)} px`);
      continue;
    }
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1 && cs.overflowX !== 'visible')
      out.push(`${describe(el)} holds ${el.scrollWidth} px in ${el.clientWidth} px (scrolls or clips)`);
    else if (r.right > box.right + 1 || r.left < box.left - 1)
      out.push(`${describe(el)} spans ${Math.round(r.left)}..${Math.round(r.right)} px, ` +
               `outside the column ${Math.round(box.left)}..${Math.round(box.right)} px`);
  }
  return [...new Set(out)];
}"""


def _content_pages(site: Path) -> list[Path]:
    return [p for p in _pages(site) if p.name not in GENERATED and p.name != "index.html"]


def _toc_pages() -> list[str]:
    """Every page the table of contents lists (``book/01_rnn``, ...), known before the site is built."""
    return re.findall(r"(?:root|file):\s*(\S+)", (REPO / "_toc.yml").read_text())


@pytest.mark.parametrize("name", _toc_pages())
def test_layout_fits_the_column_at_laptop_and_phone_sizes(site, server, browser, name):
    """The page at 1280x800, 1440x900 and 390x844: no element of the main column is wider than the column.

    Screenshots of the first chapters and the landing page at each size land in _build/screenshots/.
    """
    shots = REPO / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    failures = []
    for size, (w, h) in VIEWPORTS.items():
        page = browser.new_page(viewport={"width": w, "height": h})
        try:
            page.goto(urljoin(server, f"{name}.html"), wait_until="networkidle")
            page.evaluate(_WAIT_MATHJAX)
            boxes = _PHONE_SCROLL_BOXES if w < 960 else _SCROLL_BOXES
            failures += [f"at {size}: {p}" for p in page.evaluate(_OVERFLOW, boxes)]
            stem = name.split("/")[-1]
            if stem in ("01_rnn", "02_gradients", "intro"):
                page.screenshot(path=str(shots / f"{stem}_{size}.png"))
        finally:
            page.close()
    assert not failures, f"{len(failures)} elements wider than the main column:\n" + "\n".join(failures[:60])


# ----------------------------------------------------------------------------------------------------------------------
# figures: every figure is numbered, captioned, has alt text, and comes from rnnkit.plotting's course style

_FIGURES = """() => [...document.querySelectorAll('article.bd-article img')].map(img => {
  const fig = img.closest('figure');
  return {src: img.currentSrc || img.src, alt: img.getAttribute('alt') || '', shown: img.getBoundingClientRect().width,
          natural: img.naturalWidth, number: fig ? (fig.querySelector('.caption-number') || {}).textContent || '' : '',
          legend: fig ? !!fig.querySelector('.legend') : false,
          caption: fig ? (fig.querySelector('.caption-text') || {}).textContent || '' : ''};
})"""


@pytest.mark.parametrize("name", [p for p in _toc_pages() if re.search(r"/(0\d_|perf)", p)])
def test_every_figure_is_a_numbered_course_style_figure(site, server, browser, name):
    """Each image of a chapter is a numbered figure with caption and alt text, drawn by rnnkit.plotting (its PNG
    carries the style stamp), and at 1280 px it is shown at its full design width, so its smallest font (>= 9 pt at
    100 px per inch) renders at >= 9 px."""
    from PIL import Image

    from rnnkit import plotting

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        page.goto(urljoin(server, f"{name}.html"), wait_until="networkidle")
        page.evaluate(_IMAGES)  # decode every image
        figures = page.evaluate(_FIGURES)
    finally:
        page.close()
    failures = []
    for fig in figures:
        label = f"{fig['number'] or 'unnumbered image'} ({fig['src'].rsplit('/', 1)[-1][:16]})"
        if not fig["number"].startswith("Fig. ") or len(fig["caption"]) < 20:
            failures.append(f"{label}: not a numbered figure with a caption")
        if len(fig["alt"]) < 20:
            failures.append(f"{label}: no alt text (the figure directive's :alt:)")
        if fig["legend"]:  # an option's continuation line is parsed as the caption, the caption as a legend
            failures.append(f"{label}: the caption is split (caption {fig['caption'][:40]!r} + a legend); keep each "
                            "directive option on one line and the caption to one paragraph")
        local = site / urlparse(fig["src"]).path.lstrip("/")
        try:
            png = Image.open(local)
        except OSError as err:
            failures.append(f"{label}: cannot read {local}: {err}")
            continue
        stamp = png.info.get(plotting.STYLE_KEY, "")
        if not stamp.startswith(plotting.STYLE_NAME):
            failures.append(f"{label}: not drawn by rnnkit.plotting (no {plotting.STYLE_KEY} stamp in the PNG)")
            continue
        fields = dict(kv.split("=") for kv in stamp.split("; ")[1:])
        css_width, min_pt = float(fields["css_width_px"]), float(fields["min_font_pt"])
        if abs(png.width - css_width * plotting.SAVE_DPI / plotting.CSS_PX_PER_INCH) > 1:
            failures.append(f"{label}: PNG is {png.width} px wide, expected {css_width:.0f} CSS px at 2x")
        rendered = min_pt * plotting.CSS_PX_PER_INCH / 72 * fig["shown"] / css_width
        if rendered < 9 - 1e-6:
            failures.append(f"{label}: shown {fig['shown']:.0f} px wide of {css_width:.0f}, so its smallest "
                            f"text ({min_pt:g} pt) renders at {rendered:.1f} px < 9 px")
    assert figures, f"{name} shows no figure"
    assert not failures, "\n".join(failures[:60])


# ----------------------------------------------------------------------------------------------------------------------
# downloaded notebooks rerun in a clean kernel, without myst_nb, and show their figures

RERUN_CHAPTERS = ("01_rnn", "02_gradients")


@pytest.mark.parametrize("chapter", RERUN_CHAPTERS)
def test_downloaded_chapter_notebook_reruns_and_shows_its_figures(site, tmp_path, chapter):
    """The page's download (``_sources/book/<chapter>.ipynb``) executes with nbconvert in a fresh kernel, in a folder
    outside the repository, where ``import myst_nb`` fails (as after ``pip install rnnkit``); every figure cell
    displays an image/png and no cell errors."""
    import nbformat
    from nbconvert.preprocessors import ExecutePreprocessor

    html = (site / "book" / f"{chapter}.html").read_text()
    assert f"_sources/book/{chapter}.ipynb" in html, "the page has no .ipynb download link"
    nb_path = tmp_path / f"{chapter}.ipynb"
    shutil.copy(site / "_sources" / "book" / f"{chapter}.ipynb", nb_path)
    nb = nbformat.read(nb_path, as_version=4)
    built_pngs = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert built_pngs >= 4, f"the downloaded {chapter}.ipynb shows only {built_pngs} images as built"
    for cell in nb.cells:  # run from scratch: nothing of the build's outputs may remain
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    shadow = tmp_path / "no_myst_nb"
    (shadow / "myst_nb").mkdir(parents=True)
    (shadow / "myst_nb" / "__init__.py").write_text("raise ImportError('myst_nb is not installed here')\n")
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(shadow) + (os.pathsep + env_path if env_path else "")
    try:
        ExecutePreprocessor(timeout=600, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    finally:
        os.environ["PYTHONPATH"] = env_path
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[:1]
    figure_cells = [c for c in nb.cells if c.cell_type == "code" and "plotting.show(" in c.source]
    assert len(figure_cells) >= 4
    blank = [c.source.splitlines()[0] for c in figure_cells
             if not any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert not blank, f"figure cells that displayed no image: {blank}"
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not any("papermill.record" in k for o in outputs for k in o.get("data", {}))
    assert not any("scrapbook" in o.get("metadata", {}) for o in outputs), "myst_nb was importable in the kernel"


# ----------------------------------------------------------------------------------------------------------------------
# one repository URL: _config.yml's, used by the launch buttons, the landing page and the README


def test_the_repository_url_is_set_once_and_used_everywhere(site):
    import yaml

    url = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url), url
    org_repo = url.removeprefix("https://github.com/")
    readme = (REPO / "README.md").read_text()
    assert f"git clone {url}" in readme, "the README's clone command does not use _config.yml's repository url"
    landing = (site / "book" / "intro.html").read_text()
    landing_text = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", "", landing)).split())
    assert f'href="{url}"' in landing and f"git clone {url}" in landing_text, "landing page lacks the repository url"
    chapter = (site / "book" / "01_rnn.html").read_text()
    assert f"mybinder.org/v2/gh/{org_repo}/main?urlpath=lab/tree/book/01_rnn.md" in chapter, "no Binder launch link"
    stale = [p.name for p in [REPO / "README.md", *sorted((REPO / "book").glob("*.md"))]
             if re.search(r"github\.com/(?!" + re.escape(org_repo) + r")[\w.-]+/rnnkit\b", p.read_text())]
    assert not stale, f"another repository url for the course in {stale}"
