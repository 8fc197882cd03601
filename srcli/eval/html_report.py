"""Self-contained HTML pages: embedded images, before/after sliders and sortable score tables.

Everything a page needs is inside the one file: images are PNG ``data:`` URIs, the style and the
script (plain JavaScript, no library) are inline, and nothing refers to the network, so a page works
opened from disk, offline, and can be mailed or archived as it is.

The pieces are independent so that any command can assemble its page:

- :func:`png_data_uri`: an image (Pillow or an (H, W, 3) uint8 array) as a ``data:image/png;base64`` URI;
- :func:`slider_html`: two same-size images stacked, the second shown right of a draggable divider (a
  range input and pointer dragging move it; without script it stays at the start position);
- :func:`score_table_html`: a table whose column headers sort it (numbers numerically, missing values
  last), with the best value of each metric column highlighted per group of rows;
- :func:`page_html`: the document around them, with the shared style and script.

:func:`compare_html` is ``srcli compare --html``; ``srcli eval --per-image --html`` can build its page
from the same pieces (one :func:`score_table_html` with ``group="image"``, sliders of HR vs SR crops).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from srcli.eval.compare import CompareResult

#: The slider's divider colour (also what the screenshot test looks for).
DIVIDER_COLOUR = "#ffcc00"

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px 24px;color:#111;background:#fff}
h1{font-size:1.4em;margin:0 0 4px}h2{font-size:1.15em;margin:24px 0 8px}
p.srcli-note{color:#444;margin:4px 0 12px;max-width:60em}
.srcli-row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.srcli-overview{margin:0}.srcli-overview img{display:block;image-rendering:auto}
.srcli-overview figcaption,.srcli-slider figcaption{font-size:.85em;color:#333;margin-top:4px}
.srcli-slider{margin:0;display:inline-block}
.srcli-labels{display:flex;justify-content:space-between;font-size:.85em;font-weight:600;margin-bottom:2px}
.srcli-frame{position:relative;overflow:hidden;line-height:0;cursor:ew-resize;touch-action:none}
.srcli-frame img{position:absolute;left:0;top:0;image-rendering:pixelated;user-select:none;-webkit-user-drag:none}
.srcli-after{clip-path:inset(0 0 0 calc(var(--pos) * 1%))}
.srcli-divider{position:absolute;top:0;bottom:0;left:calc(var(--pos) * 1%);width:2px;margin-left:-1px;
background:DIVIDER;pointer-events:none}
.srcli-slider input[type=range]{display:block;width:100%;margin:4px 0 0}
table.srcli-scores{border-collapse:collapse;font-size:.9em;margin:0 0 8px}
table.srcli-scores caption{text-align:left;font-weight:600;padding-bottom:4px}
table.srcli-scores th,table.srcli-scores td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}
table.srcli-scores th.srcli-text,table.srcli-scores td.srcli-text{text-align:left}
table.srcli-scores th button{font:inherit;font-weight:600;background:none;border:0;padding:0;cursor:pointer}
table.srcli-scores th[aria-sort=ascending] button::after{content:" \\25B2"}
table.srcli-scores th[aria-sort=descending] button::after{content:" \\25BC"}
td.srcli-best{color:#c00;font-weight:700}
""".replace("DIVIDER", DIVIDER_COLOUR)

_SCRIPT = """
(function () {
  function setPos(slider, value) {
    var v = Math.min(100, Math.max(0, Number(value)));
    slider.style.setProperty('--pos', v);
    slider.querySelector('input[type=range]').value = v;
  }
  document.querySelectorAll('.srcli-slider').forEach(function (slider) {
    var range = slider.querySelector('input[type=range]');
    var frame = slider.querySelector('.srcli-frame');
    var dragging = false;
    function follow(e) {
      var r = frame.getBoundingClientRect();
      setPos(slider, ((e.clientX - r.left) / r.width * 100).toFixed(1));
    }
    range.addEventListener('input', function () { setPos(slider, range.value); });
    frame.addEventListener('pointerdown', function (e) {
      dragging = true; frame.setPointerCapture(e.pointerId); follow(e);
    });
    frame.addEventListener('pointermove', function (e) { if (dragging) { follow(e); } });
    frame.addEventListener('pointerup', function () { dragging = false; });
    frame.addEventListener('pointercancel', function () { dragging = false; });
    slider.setAttribute('data-ready', '1');
  });
  function sortBy(th) {
    var table = th.closest('table');
    var column = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.getAttribute('data-type') === 'number';
    var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
    table.querySelectorAll('thead th').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    function key(row) {
      var cell = row.cells[column];
      return cell.hasAttribute('data-sort') ? cell.getAttribute('data-sort') : cell.textContent;
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (numeric) {
        var fx = x === '' ? NaN : parseFloat(x), fy = y === '' ? NaN : parseFloat(y);
        if (isNaN(fx) || isNaN(fy)) { return isNaN(fx) - isNaN(fy); }
        return dir * (fx - fy);
      }
      return dir * x.localeCompare(y, undefined, {numeric: true});
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll('table.srcli-scores thead th').forEach(function (th) {
    var button = th.querySelector('button');
    if (button) { button.addEventListener('click', function () { sortBy(th); }); }
  });
})();
"""


def png_data_uri(image: Image.Image | np.ndarray) -> str:
    """``data:image/png;base64,...`` of a Pillow image or an (H, W, 3) / (H, W) uint8 array."""
    from PIL import Image

    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", optimize=False, compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """(width, height) of a Pillow image or an array."""
    if hasattr(image, "size") and isinstance(image.size, tuple):
        return image.size  # type: ignore[return-value]
    return int(image.shape[1]), int(image.shape[0])  # type: ignore[union-attr]


def image_html(image: Image.Image | np.ndarray, alt: str, caption: str = "", css_class: str = "srcli-overview") -> str:
    """An embedded image in a ``<figure>`` with an optional caption."""
    width, height = _size(image)
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (
        f'<figure class="{css_class}"><img src="{png_data_uri(image)}" width="{width}" height="{height}" '
        f'alt="{html.escape(alt, quote=True)}">{cap}</figure>'
    )


def slider_html(
    before: Image.Image | np.ndarray,
    after: Image.Image | np.ndarray,
    *,
    before_label: str,
    after_label: str,
    caption: str = "",
    start: float = 50.0,
) -> str:
    """A before/after slider: ``before`` left of the divider, ``after`` right of it, divider at ``start`` %.

    Both images must have the same size; they are shown at their own pixel size (``image-rendering:
    pixelated`` keeps enlarged crops sharp when the browser zooms).
    """
    size = _size(before)
    if _size(after) != size:
        raise ValueError(f"slider images differ in size: {size} vs {_size(after)}")
    width, height = size
    b, a = html.escape(before_label), html.escape(after_label)
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (
        f'<figure class="srcli-slider" style="--pos:{start:g};width:{width}px">'
        f'<div class="srcli-labels"><span>{b}</span><span>{a}</span></div>'
        f'<div class="srcli-frame" style="width:{width}px;height:{height}px">'
        f'<img class="srcli-before" src="{png_data_uri(before)}" width="{width}" height="{height}" alt="{b}">'
        f'<img class="srcli-after" src="{png_data_uri(after)}" width="{width}" height="{height}" alt="{a}">'
        '<div class="srcli-divider"></div></div>'
        f'<input type="range" min="0" max="100" step="0.1" value="{start:g}" aria-label="{b} | {a}">'
        f"{cap}</figure>"
    )


@dataclass(frozen=True)
class Column:
    """A score-table column: the row key, its header, how to show a value and which way is better.

    ``higher_is_better=None``: not a metric (no highlight); ``numeric``: sorts by number.
    """

    key: str
    label: str
    numeric: bool = False
    higher_is_better: bool | None = None
    fmt: Callable[[Any], str] | None = None


def _best(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], group: str | None) -> set[tuple[int, str]]:
    """(row index, column key) of each metric column's best value within each group (>= 2 values)."""
    groups: dict[Any, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.get(group) if group else None, []).append(i)
    best: set[tuple[int, str]] = set()
    for members in groups.values():
        for col in columns:
            if col.higher_is_better is None:
                continue
            values = [
                (rows[i][col.key], i)
                for i in members
                if isinstance(rows[i].get(col.key), (int, float)) and math.isfinite(rows[i][col.key])
            ]
            if len(values) < 2:
                continue
            target = max(v for v, _ in values) if col.higher_is_better else min(v for v, _ in values)
            best.update((i, col.key) for v, i in values if v == target)
    return best


def score_table_html(
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, Any]],
    *,
    caption: str = "",
    group: str | None = None,
) -> str:
    """A sortable table: one ``<tr>`` per row mapping, one cell per column (missing values as ``-``).

    Clicking a header sorts by that column (again: the other way). In each metric column the best value
    is highlighted, among all rows or within the rows sharing the same ``group`` value.
    """
    best = _best(rows, columns, group)
    head = "".join(
        f'<th scope="col" class="{"" if c.numeric else "srcli-text"}" data-type="{"number" if c.numeric else "text"}">'
        f'<button type="button">{html.escape(c.label)}</button></th>'
        for c in columns
    )
    body = []
    for i, row in enumerate(rows):
        cells = []
        for c in columns:
            value = row.get(c.key)
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            shown = "-" if missing else (c.fmt(value) if c.fmt else str(value))
            classes = " ".join(
                name for name, on in (("srcli-text", not c.numeric), ("srcli-best", (i, c.key) in best)) if on
            )
            sort = "" if missing else (repr(float(value)) if c.numeric else str(value))
            cells.append(f'<td class="{classes}" data-sort="{html.escape(sort, quote=True)}">{html.escape(shown)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<table class="srcli-scores">{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def page_html(title: str, sections: Sequence[str], *, note: str = "") -> str:
    """A whole HTML document: ``title`` as heading, an optional ``note`` paragraph, then ``sections``
    (HTML fragments, e.g. from the functions above), with the inline style and script."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>"
        f"<h1>{html.escape(title)}</h1>"
        + (f'<p class="srcli-note">{html.escape(note)}</p>' if note else "")
        + "\n".join(sections)
        + f"<script>{_SCRIPT}</script></body></html>\n"
    )


def metric_columns(metrics: Sequence[str]) -> list[Column]:
    """Score-table columns for metric names (labels, digits and direction as ``srcli eval``)."""
    from srcli.eval.per_image import available_metrics, format_metric, metric_label

    higher = available_metrics()
    return [
        Column(
            m,
            metric_label(m),
            numeric=True,
            higher_is_better=higher.get(m, True),
            fmt=lambda v, m=m: format_metric(m, v),
        )
        for m in metrics
    ]


def per_image_table_html(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    *,
    keys: Sequence[str] = ("image", "model", "dataset", "scale"),
    group: str | None = "image",
    caption: str = "",
) -> str:
    """A sortable per-image score table (what ``srcli eval --per-image --html`` needs): the ``keys`` columns
    that any row has (text), then one column per metric; the best value per metric is highlighted among
    the rows with the same ``group`` value (by default: the models on one image)."""
    present = [k for k in keys if any(k in row for row in rows)]
    columns = [Column(k, k, numeric=k == "scale") for k in present]
    return score_table_html([*columns, *metric_columns(metrics)], rows, caption=caption, group=group)


def compare_html(result: CompareResult, zoom: int | None = None) -> str:
    """``srcli compare --html``: per image the whole image with the crop box, the scores (sortable), and a
    slider per model (the HR crop, or for LR input the bicubic crop, against the model's), at the
    figure's zoom; with several scored images, a table of every score at the end."""
    from srcli.eval.compare import enlarge, figure_layout, overview_image, score_line, size_text

    layout = figure_layout(result, zoom)
    scored = not result.lr_input
    sections = []
    all_rows: list[dict[str, Any]] = []
    for row in layout.rows:
        image = row.image
        c = image.crop
        parts = [
            f"<section><h2>{html.escape(image.name)}</h2>",
            f'<p class="srcli-note">{html.escape(size_text(result, image))}; crop x={c.x} y={c.y} {c.w}x{c.h} '
            f"({image.crop_source}), "
            f"shown {row.zoom}x (nearest neighbour).</p>",
            '<div class="srcli-row">',
            image_html(overview_image(image, row.overview_scale), f"{image.name} with the crop box", image.name),
        ]
        if scored:
            rows = [{"model": m, **image.scores[m]} for m in result.models]
            all_rows += [{"image": image.name, **r} for r in rows]
            parts.append(
                score_table_html(
                    [Column("model", "model"), *metric_columns(result.metrics)],
                    rows,
                    caption="on the whole image",
                )
            )
        parts.append('</div><div class="srcli-row" style="margin-top:12px">')
        before = enlarge(image.reference, c, row.zoom)
        for model in result.models:
            caption = ""
            if scored:
                caption = " / ".join(score_line(m, image.scores[model].get(m)) for m in result.metrics)
            parts.append(
                slider_html(
                    before,
                    enlarge(image.outputs[model], c, row.zoom),
                    before_label=image.reference_label,
                    after_label=model,
                    caption=caption,
                )
            )
        parts.append("</div></section>")
        sections.append("".join(parts))
    if scored and len(layout.rows) > 1:
        sections.append(
            "<section><h2>All images</h2>"
            + score_table_html(
                [Column("image", "image"), Column("model", "model"), *metric_columns(result.metrics)],
                all_rows,
                group="image",
            )
            + "</section>"
        )
    if scored:
        note = (
            f"x{result.scale}. Each model ran on the MATLAB-bicubic LR of the HR image; scores on the whole image, "
            f"Y channel, {result.scale} px border cropped, as 'srcli eval --per-image'. Drag a slider: "
            "HR on the left, the model on the right."
        )
    else:
        note = (
            f"x{result.scale} from low-resolution input (no ground truth, no scores). Drag a slider: bicubic on "
            "the left, the model on the right."
        )
    return page_html("srcli compare", sections, note=note)
