"""The parts every report.html page shares: the page itself (plotly.js embedded once, figures
as JSON drawn in turn), safe JSON inside <script>, sortable tables, heatmaps, palettes, photos.

The page needs no network: plotly.js is embedded once, figures are plotly JSON drawn with
``Plotly.newPlot``, photos are base64 data URIs. Every string that comes from the user is
HTML-escaped in markup and in plotly labels, and JSON put inside ``<script>`` has ``<``,
``>`` and ``&`` written as ``\\u003c``... so a name holding ``</script>`` cannot end it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from placedemarche.core.progress import track
from placedemarche.report.plots import DISTINCT_COLOURS

PAGE_NAME = "report.html"


def heatmap(go, matrix, x, y, title: str, x_title: str, y_title: str, groups=None):
    """A count matrix; ``groups`` (first level, start, end) of the rows, from
    data.categories.first_level_groups, draws lines between the first levels of a category tree."""
    z = np.asarray(matrix)
    # dozens of categories: blank zero cells, so the counts that matter stand out
    text = [[str(v) if v or len(y) <= 20 else "" for v in row] for row in z.tolist()]
    fig = go.Figure(go.Heatmap(z=z.tolist(), x=x, y=y, colorscale="Blues", text=text,
                               texttemplate="%{text}", showscale=False,
                               hovertemplate="true %{y}<br>" + x_title.split(" ")[0] + " %{x}<br>%{z} products<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text=y_title)
    fig.update_xaxes(tickangle=-35, title_text=x_title)
    side = 260 + 34 * max(len(x), len(y))
    fig.update_layout(title={"text": html.escape(title), "font": {"size": 13}}, width=side + 120,
                      height=side, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    if groups and any(end - start > 1 for _, start, end in groups):
        line = {"color": "#555", "width": 1.5}
        for _, start, _ in groups[1:]:
            fig.add_shape(type="line", x0=-0.5, x1=len(x) - 0.5, y0=start - 0.5, y1=start - 0.5, line=line)
            fig.add_shape(type="line", y0=-0.5, y1=len(y) - 0.5, x0=start - 0.5, x1=start - 0.5, line=line)
    return fig


def category_items(info: dict) -> list[tuple[str, str]]:
    """Header lines of a report: the level of the category tree and what choosing it left out
    or merged (``category_info``, see data/categories.py); none at level 1 with nothing left out."""
    from placedemarche.data.categories import category_note

    note = category_note(info) if info else None
    return ([("category level", str(info["level"]))] if info.get("level", 1) > 1 else []) + \
        ([("categories left out", html.escape(note))] if note else [])


def photo_data_uri(path: Path) -> str:
    """A PNG of photos as a data URI, re-encoded as JPEG when that is smaller (it is ~5x)."""
    from PIL import Image

    raw = path.read_bytes()
    try:
        with Image.open(io.BytesIO(raw)) as im:
            buffer = io.BytesIO()
            im.convert("RGB").save(buffer, "JPEG", quality=85, optimize=True)
        if buffer.tell() < len(raw):
            return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    except OSError:
        pass
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def thumbnails(paths: Sequence[Path | None], size: int) -> dict[str, str]:
    """Base64 JPEG thumbnails keyed by product index; unreadable photos are left out."""
    from PIL import Image

    thumbs = {}
    for i, path in enumerate(track(list(paths), "report.html: thumbnails")):
        if path is None:
            continue
        try:
            with Image.open(path) as im:
                im.draft("RGB", (2 * size, 2 * size))  # JPEG: decode at reduced scale, much faster
                small = im.convert("RGB")
                small.thumbnail((size, size))
                buffer = io.BytesIO()
                small.save(buffer, "JPEG", quality=75, optimize=True)
        except (OSError, ValueError):
            continue
        thumbs[str(i)] = base64.b64encode(buffer.getvalue()).decode("ascii")
    return thumbs


def script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (see the module docstring)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_page(title: str, body: str, figures: list[tuple[str, Any]], data: dict, extra_js: str) -> str:
    from plotly.offline import get_plotlyjs

    specs, template = {}, None
    for key, fig in figures:
        spec = json.loads(fig.to_json())
        # Every figure has the same default template (~7 kB): the page holds it once.
        template = spec["layout"].pop("template", template)
        specs[key] = spec
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)} - placedemarche</title>",
        f"<style>{_CSS}</style>",
        # plotly.js once for every figure of the page; nothing is fetched from the network.
        f"<script>{get_plotlyjs()}</script>",
        "</head><body>",
        body,
        f"<script>const FIGURES = {script_json(specs)};\nconst TEMPLATE = {script_json(template)};\n"
        f"const DATA = {script_json(data)};</script>",
        f"<script>{_SORT_JS}\n{extra_js}\n{_DRAW_JS}</script>",
        "</body></html>",
        "",
    ])


def colour_palette(n: int) -> list[str]:
    """The PNG plots' colours (a category looks the same on both), then Alphabet past twenty."""
    import plotly.express as px

    colours = list(DISTINCT_COLOURS) + px.colors.qualitative.Alphabet
    return [colours[i % len(colours)] for i in range(max(n, 1))]


def table(head: list[str], rows: list[str]) -> str:
    header = "".join(f'<th title="sort">{html.escape(str(h))}</th>' for h in head)
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def td(text: str, value: float | None = None) -> str:
    """A cell; ``value`` (a number) is what the column sorts on."""
    if value is None:
        return f"<td>{html.escape(text)}</td>"
    sort = "" if isinstance(value, float) and math.isnan(value) else repr(float(value))
    return f'<td class="num" data-value="{sort}">{html.escape(text)}</td>'


def definition_list(items: list[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items) + "</dl>"


def plus_minus(mean: float, sd: float) -> str:
    if mean is None or math.isnan(mean):
        return "-"
    return f"{mean:.3f} ± {sd:.3f}" if sd is not None and not math.isnan(sd) else f"{mean:.3f}"


def none_if_nan(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px 32px 48px; color: #222; }
body:has(#hover-panel) { margin-right: 300px; }
h1 { margin-top: 0; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dt { color: #666; } dd { margin: 0; }
table.sortable { border-collapse: collapse; font-size: 13px; }
.scroll { overflow-x: auto; }
.plot.confusion { overflow: auto; max-width: 100%; max-height: 90vh; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
th { cursor: pointer; background: #f5f5f5; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #666; } .headline { font-size: 16px; }
.row { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
img.grid { max-width: 100%; border: 1px solid #eee; }
#hover-panel { position: fixed; right: 16px; top: 16px; width: 250px; padding: 10px;
  background: #fff; border: 1px solid #ccc; border-radius: 6px; box-shadow: 0 2px 8px #0002; font-size: 13px; }
#hover-panel img { width: 128px; height: 128px; object-fit: contain; image-rendering: auto;
  display: block; margin-bottom: 6px; background: #f5f5f5; }
#hover-panel .name { font-weight: 600; word-wrap: break-word; }
"""


_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var headers = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(headers, function (th, col) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col];
        if (cell.hasAttribute("data-value")) {
          var v = cell.getAttribute("data-value");
          return v === "" ? null : parseFloat(v);
        }
        return cell.textContent.trim().toLowerCase();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return (x === null) - (y === null); }
        var order = x < y ? -1 : x > y ? 1 : 0;
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

# Hover labels are built here from one shared list of names (not repeated in every trace),
# and the photo goes to the side panel: plotly hover labels cannot show images.


_DRAW_JS = """
var pending = Object.keys(FIGURES);
function drawNext() {
  var key = pending.shift();
  if (key === undefined) { document.body.setAttribute("data-drawn", "true"); return; }
  var div = document.getElementById("fig-" + key);
  var figure = FIGURES[key];
  if (key.indexOf("map-") === 0) { prepareMap(key, figure); }
  if (TEMPLATE) { figure.layout.template = TEMPLATE; }
  Plotly.newPlot(div, figure.data, figure.layout, {responsive: true, displaylogo: false}).then(function () {
    if (key.indexOf("map-") === 0) {
      div.on("plotly_hover", function (event) { showProduct(div, event.points[0]); });
    }
    setTimeout(drawNext, 0);
  });
}
drawNext();
"""
