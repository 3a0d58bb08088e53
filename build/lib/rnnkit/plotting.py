r"""The course's figure style and the one way a chapter shows a figure.

How a chapter makes a figure (the pattern every page follows)::

    ```{code-cell} ipython3
    :tags: [hide-input, remove-output]
    fig, ax = plotting.figure(aspect=0.4)          # course style, sized to the main column
    ax.plot(...); ax.set_xlabel("time step $t$"); ax.set_ylabel("gradient norm")
    plotting.show(fig, "fig_grad_norms")           # displays the PNG *and* glues it under that name
    ```

    ```{glue:figure} fig_grad_norms
    :name: fig-grad-norms
    :alt: One sentence saying what the figure shows, for readers who cannot see it.

    Caption: what is plotted, and what to notice.
    ```

* The page shows the figure once: numbered, captioned, with alt text, through ``{glue:figure}``. The code cell is tagged
  ``remove-output`` so its displayed copy is not shown a second time (``hide-input`` folds the drawing code away; leave
  it out where the code is the lesson).
* A number the prose quotes with the ``glue:text`` role is stored with :func:`record`, which needs no ``myst_nb``
  either.
* The downloaded ``.ipynb`` shows the figure too: :func:`show` emits an ordinary ``image/png`` output (``glue(...,
  display=True)``), which every Jupyter front end displays; tags only change the rendered page. Run again in a plain
  kernel without ``myst_nb`` (``pip install rnnkit``), :func:`show` simply displays the image.

Sizes: a figure ``w`` inches wide is shown ``w * 100`` CSS pixels wide (``CSS_PX_PER_INCH``), whatever the screen;
the PNG holds twice as many pixels (``SAVE_DPI``) so text stays sharp on high-density screens. A full-width figure
is ``COLUMN_PX`` wide -- the main column at a 1280 px window (``book/_static/course.css``) -- so one point of font
size is 100/72 = 1.39 CSS px, and :func:`show` refuses a figure with text smaller than ``MIN_FONT_PT`` (9 pt =
12.5 px) or wider than the column. Every PNG carries a ``rnnkit-style`` text chunk (``STYLE_KEY``), which the book's
tests read to check that each figure on the site came from here.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib
from cycler import cycler

__all__ = ["COLUMN_PX", "CSS_PX_PER_INCH", "SAVE_DPI", "MIN_FONT_PT", "STYLE_KEY", "STYLE_NAME", "COLORS",
           "style", "figure", "png_bytes", "show", "record"]

COLUMN_PX = 960          # main column width (CSS px) at a 1280 px window; course.css gives the column this room
CSS_PX_PER_INCH = 100    # figure.dpi: how wide one inch of figure is shown, in CSS px
SAVE_DPI = 200           # PNG pixels per inch: 2 device pixels per CSS pixel
MIN_FONT_PT = 9.0        # 9 pt shows as 12.5 CSS px
STYLE_KEY = "rnnkit-style"
STYLE_NAME = "rnnkit-course-1"

# Okabe & Ito's colour-blind-safe palette (black last: it is also the text colour)
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

_RC: dict[str, Any] = {
    "figure.dpi": CSS_PX_PER_INCH,
    "savefig.dpi": SAVE_DPI,
    "figure.figsize": (COLUMN_PX / CSS_PX_PER_INCH, 0.4 * COLUMN_PX / CSS_PX_PER_INCH),
    "figure.constrained_layout.use": True,
    "font.size": 10.5,
    "axes.titlesize": 11,
    "axes.labelsize": 10.5,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "legend.fontsize": 9.5,
    "legend.title_fontsize": 9.5,
    "legend.framealpha": 0.9,
    "figure.titlesize": 11.5,
    "axes.prop_cycle": cycler(color=COLORS),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.8,
    "image.cmap": "viridis",
    "mathtext.fontset": "dejavusans",
}


def style() -> None:
    """Set the course style (fonts, colours, sizes) in matplotlib's ``rcParams``; calling it again changes nothing."""
    matplotlib.rcParams.update(_RC)  # type: ignore[arg-type]  # matplotlib types keys as a Literal of names


def figure(rows: int = 1, cols: int = 1, *, width: float = 1.0, aspect: float = 0.4, **subplots_kw: Any):
    """A course-style figure ``width`` (fraction of the main column) wide and ``aspect * width`` tall.

    Returns ``(fig, axes)`` as ``matplotlib.pyplot.subplots`` does (one ``Axes`` for 1x1, else an array).
    """
    import matplotlib.pyplot as plt

    for name, count in (("rows", rows), ("cols", cols)):
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError(f"figure() expected an int for {name}, got {type(count).__name__}")
        if count < 1:
            raise ValueError(f"figure() expected {name} >= 1, got {count}")
    limits: tuple[tuple[str, float, float], ...] = (("width", width, 1.0), ("aspect", aspect, 3.0))
    for name, value, hi in limits:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"figure() expected a number for {name}, got {type(value).__name__}")
        if not 0 < value <= hi:
            raise ValueError(f"figure() expected 0 < {name} <= {hi}, got {value}")
    style()
    w = width * COLUMN_PX / CSS_PX_PER_INCH  # inches
    return plt.subplots(rows, cols, figsize=(w, aspect * w), **subplots_kw)


def _check_legible(fig) -> float:
    """The smallest font size (pt) of any visible text in ``fig``; ValueError when under MIN_FONT_PT or too wide."""
    from matplotlib.text import Text

    fig.canvas.draw()  # tick labels get their text at draw time
    width_px = fig.get_figwidth() * CSS_PX_PER_INCH
    if width_px > COLUMN_PX + 0.5:
        raise ValueError(f"figure is {width_px:.0f} px wide, wider than the {COLUMN_PX} px column: "
                         f"use rnnkit.plotting.figure(width=...) (at most {COLUMN_PX / CSS_PX_PER_INCH:g} in)")
    sizes = [(t.get_fontsize(), t.get_text()) for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip()]
    if not sizes:
        return float("nan")
    small = [(s, text) for s, text in sizes if s < MIN_FONT_PT - 1e-9]
    if small:
        size, text = min(small)
        raise ValueError(f"text {text[:40]!r} is {size:g} pt, smaller than the course's {MIN_FONT_PT:g} pt "
                         f"({MIN_FONT_PT * CSS_PX_PER_INCH / 72:.1f} px as shown)")
    return min(s for s, _ in sizes)


def png_bytes(fig) -> bytes:
    """``fig`` as PNG bytes at ``SAVE_DPI``, stamped with the course style (the ``rnnkit-style`` text chunk).

    The canvas is kept as laid out (no tight bounding box), so the PNG is exactly ``figwidth * SAVE_DPI`` pixels wide.
    """
    smallest = _check_legible(fig)
    stamp = (f"{STYLE_NAME}; css_width_px={fig.get_figwidth() * CSS_PX_PER_INCH:.0f}; "
             f"min_font_pt={smallest:g}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=SAVE_DPI, metadata={STYLE_KEY: stamp})
    return buf.getvalue()


def show(fig, name: str | None = None) -> None:
    """Display ``fig`` as an ``image/png`` output and, inside a book build, glue it as ``name`` for ``{glue:figure}``.

    The image is shown at ``figwidth * 100`` CSS px (``retina``: half its pixel size). ``myst_nb`` is imported only
    when ``name`` is given and it is installed, so a downloaded chapter runs in a plain Jupyter kernel. The figure is
    closed afterwards (the inline backend would otherwise draw it a second time).
    """
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    if name is not None and not isinstance(name, str):
        raise TypeError(f"show() expected a str glue name, got {type(name).__name__}")
    try:
        image = Image(data=png_bytes(fig), format="png", retina=True)
    finally:
        plt.close(fig)
    if name is not None:
        try:
            from myst_nb import glue
        except ImportError:
            pass
        else:
            glue(name, image, display=True)
            return
    display(image)


def record(name: str, value: Any) -> None:
    """Store ``value`` under ``name`` for ``{glue:text}`` in a book build, without displaying it.

    Outside a build, in a kernel without ``myst_nb`` (a downloaded chapter run after ``pip install rnnkit``), it does
    nothing: the chapters print every number they quote.
    """
    if not isinstance(name, str):
        raise TypeError(f"record() expected a str glue name, got {type(name).__name__}")
    try:
        from myst_nb import glue
    except ImportError:
        return
    glue(name, value, display=False)
