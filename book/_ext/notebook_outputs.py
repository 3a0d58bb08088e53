"""Sphinx extension: a page's downloadable notebook keeps its outputs when they come from the execution cache.

Why: myst-nb 1.4 writes ``_build/jupyter_execute/<page>.ipynb`` -- the file the page's download button serves
(sphinx-book-theme copies it to ``_sources/``) -- from the notebook it parsed. After a fresh execution that notebook
holds the outputs; when they come from the jupyter-cache instead (``execute_notebooks: cache``: every rebuild, and
the test build, which reuses the cache), the cache merges them into a *copy*, and the file is written with no output
at all, so the download showed neither printouts nor figures.

After all pages are read and before any is written, every such file whose code cells have no output gets the cached
outputs merged in (``jupyter_cache``'s own ``merge_match_into_notebook``, the call myst-nb makes). tests/test_book.py
checks that a downloaded chapter shows its figures, on a build that reuses the cache.
"""

from __future__ import annotations

from pathlib import Path

import nbformat


def _fill_outputs(app, env):
    if app.builder.format != "html":
        return []
    config = getattr(env, "mystnb_config", None)  # myst-nb resolves both folders at builder-inited
    if config is None or config.execution_mode != "cache":
        return []
    cache_path, folder = Path(config.execution_cache_path), Path(config.output_folder)
    if not cache_path.is_dir() or not folder.is_dir():
        return []
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_path))
    for path in sorted(folder.rglob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        if not code or any(cell.get("outputs") for cell in code):
            continue
        try:
            _, merged = cache.merge_match_into_notebook(nb)
        except KeyError:  # not in the cache: nothing to add
            continue
        nbformat.write(merged, path)
    return []


def setup(app):
    app.connect("env-updated", _fill_outputs)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
