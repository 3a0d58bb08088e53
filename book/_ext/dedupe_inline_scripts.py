"""Sphinx extension: drop duplicated inline ``<script>`` tags from every page.

Why: with Sphinx 7.4, an extension that calls ``app.add_js_file(None, body=...)`` after the HTML builder exists
(sphinx-thebe 0.3.1 does, on ``env-before-read-docs``; sphinx-togglebutton too) registers the script twice -- once
in the builder as ``_JavaScript(None, ...)`` and once from the registry as ``_JavaScript('', ...)`` -- and the two
compare unequal, so both are written. sphinx-thebe's body declares ``const THEBE_JS_URL``, and the second copy makes
every page log ``Uncaught SyntaxError: Identifier 'THEBE_JS_URL' has already been declared``.

Only exact duplicates (same body and attributes, no ``src``) are removed; files with a ``src`` are untouched.
tests/test_book.py checks in headless Chromium that no page logs a console error.
"""

from __future__ import annotations


def _dedupe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen = set()
    kept = []
    for js in scripts:
        filename = getattr(js, "filename", js)
        attributes = getattr(js, "attributes", {}) or {}
        if not filename and "body" in attributes:  # an inline script
            key = tuple(sorted((k, str(v)) for k, v in attributes.items() if k != "priority"))
            if key in seen:
                continue
            seen.add(key)
        kept.append(js)
    context["script_files"] = kept


def setup(app):
    # run after the themes and extensions that add scripts in html-page-context (default priority 500)
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
