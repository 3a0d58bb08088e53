"""rnnkit.plotting: the course style, its legibility checks, the PNG stamp, and show() with and without myst_nb."""

from __future__ import annotations

import io
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from rnnkit import plotting  # noqa: E402


def test_figure_is_sized_to_the_column_and_the_png_is_stamped():
    fig, ax = plotting.figure(aspect=0.5)
    ax.plot([0, 1], [1, 0], label="a")
    ax.set_xlabel("step $t$")
    ax.legend()
    png = plotting.png_bytes(fig)
    img = PILImage.open(io.BytesIO(png))
    assert img.size == (2 * plotting.COLUMN_PX, plotting.COLUMN_PX)  # SAVE_DPI = 2 px per CSS px
    stamp = img.info[plotting.STYLE_KEY]
    assert stamp.startswith(plotting.STYLE_NAME) and f"css_width_px={plotting.COLUMN_PX}" in stamp
    assert float(stamp.split("min_font_pt=")[1]) >= plotting.MIN_FONT_PT
    plt.close(fig)


def test_half_width_figure_and_subplot_grid():
    fig, axes = plotting.figure(1, 2, width=0.5, aspect=0.8)
    assert axes.shape == (2,)
    size = PILImage.open(io.BytesIO(plotting.png_bytes(fig))).size
    assert size == (plotting.COLUMN_PX, int(0.8 * plotting.COLUMN_PX))
    plt.close(fig)


def test_small_text_and_too_wide_figures_are_refused():
    fig, ax = plotting.figure()
    ax.text(0.5, 0.5, "tiny label", fontsize=6)
    with pytest.raises(ValueError, match=r"'tiny label' is 6 pt, smaller than the course's 9 pt"):
        plotting.png_bytes(fig)
    plt.close(fig)
    fig = plt.figure(figsize=(12, 3))
    with pytest.raises(ValueError, match="1200 px wide, wider than the 960 px column"):
        plotting.png_bytes(fig)
    plt.close(fig)


@pytest.mark.parametrize("kwargs, err, match", [
    ({"rows": 0}, ValueError, "rows >= 1, got 0"),
    ({"cols": 1.5}, TypeError, "int for cols, got float"),
    ({"width": 1.2}, ValueError, "0 < width <= 1.0, got 1.2"),
    ({"aspect": "wide"}, TypeError, "number for aspect, got str"),
])
def test_figure_argument_errors(kwargs, err, match):
    with pytest.raises(err, match=match):
        plotting.figure(**kwargs)


def _capture(monkeypatch, hide_myst_nb: bool) -> list:
    """Record every display call that show()/record() make, through IPython directly or through myst_nb's glue."""
    import IPython.core.display_functions as df
    import IPython.display

    sent = []
    fake = lambda *objs, **kw: sent.append((objs, kw))  # noqa: E731
    monkeypatch.setattr(IPython.display, "display", fake)
    monkeypatch.setattr(df, "display", fake)
    if hide_myst_nb:
        monkeypatch.setitem(sys.modules, "myst_nb", None)  # `import myst_nb` raises ImportError
    else:
        glue_module = pytest.importorskip("myst_nb.ext.glue")
        monkeypatch.setattr(glue_module, "ipy_display", fake)
    return sent


def _show(monkeypatch, hide_myst_nb: bool) -> list:
    sent = _capture(monkeypatch, hide_myst_nb)
    fig, ax = plotting.figure(width=0.5)
    ax.plot([0, 1])
    plotting.show(fig, "fig_x")
    assert not plt.fignum_exists(fig.number), "show() must close the figure"
    return sent


def test_show_without_myst_nb_displays_an_image(monkeypatch):
    (objs, kw), = _show(monkeypatch, hide_myst_nb=True)
    image = objs[0]
    data, meta = image.data, image._repr_png_()[1]
    assert data.startswith(b"\x89PNG") and meta == {"width": plotting.COLUMN_PX // 2,
                                                     "height": plotting.COLUMN_PX // 5}  # retina: shown at half


def test_show_with_myst_nb_glues_a_displayed_png(monkeypatch):
    # glue(display=True) displays a raw bundle: plain image/png (what Jupyter shows) plus the scrapbook name
    (objs, kw), = _show(monkeypatch, hide_myst_nb=False)
    assert kw.get("raw") is True and "image/png" in objs[0]
    assert kw["metadata"]["scrapbook"] == {"name": "fig_x", "mime_prefix": ""}
    assert kw["metadata"]["image/png"]["width"] == plotting.COLUMN_PX // 2


def test_record_is_a_no_op_without_myst_nb(monkeypatch):
    sent = _capture(monkeypatch, hide_myst_nb=True)
    plotting.record("n_lines", 743)
    assert sent == []
    with pytest.raises(TypeError, match="str glue name, got int"):
        plotting.record(3, 1)


def test_record_glues_a_hidden_value_with_myst_nb(monkeypatch):
    sent = _capture(monkeypatch, hide_myst_nb=False)
    plotting.record("n_lines", 743)
    (objs, kw), = sent
    assert objs[0] == {"application/papermill.record/text/plain": "743"}
