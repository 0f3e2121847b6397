"""report.html: one self-contained interactive page for an evaluation or a training run.

The page needs no network: plotly.js is embedded once, figures are plotly JSON drawn with
``Plotly.newPlot``, photos are base64 data URIs. Every string that comes from the user
(product, category, run and spec names) is HTML-escaped in markup and in plotly labels
(plotly renders a subset of HTML in them), and JSON put inside ``<script>`` has ``<``,
``>`` and ``&`` written as ``\\u003c``... so a name holding ``</script>`` cannot end it.

Usage::

    from placedemarche.report.html_evaluation import write_evaluation_html

    page = write_evaluation_html(report, Path("results"), catalog)   # results/report.html
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from placedemarche.core.files import atomic_write_text
from placedemarche.report.html_page import PAGE_NAME, colour_palette, definition_list, heatmap, none_if_nan, photo_data_uri, render_page, plus_minus, table, td, thumbnails
from placedemarche.evaluate.metrics import METRICS, match_clusters, n_clusters_of
from placedemarche.data.categories import first_level_groups
from placedemarche.report.html_page import category_items
from placedemarche.report.plots import NOISE_COLOUR, map_title, text_field_label

if TYPE_CHECKING:
    from placedemarche.data.catalog import Catalog
    from placedemarche.evaluate.results import EvaluationReport, RunResult

THUMBNAIL_PX = 64
# SVG markers stay responsive up to a few thousand points and need no WebGL context
# (browsers cap those per page, one per map): only larger maps switch to scattergl.
WEBGL_ABOVE_POINTS = 5000
METRIC_TITLES = {"ari": "ARI", "nmi": "NMI", "homogeneity": "homog.", "completeness": "compl.",
                 "silhouette": "silhouette", "matched_accuracy": "matched acc."}


# -- evaluation ----------------------------------------------------------------------------
def write_evaluation_html(report: "EvaluationReport", out: Path, catalog: "Catalog") -> Path:
    """Write ``out/report.html``: ranked table, ARI summary, and per run an interactive map
    (hover shows the product's photo), confusion matrices and cluster photo grid. Maps show
    the report's ``plot_sample`` only (past the evaluator's size threshold): the page embeds
    names, photos and points of those products, so it stays small enough to open."""
    categories = report.categories
    index = {c: i for i, c in enumerate(categories)}
    shown = np.arange(len(catalog))[report.plotted()]
    names, labels, paths = list(catalog.names), list(catalog.labels), list(catalog.image_paths)
    products = {
        "names": [names[i] for i in shown],
        "category": [index[labels[i]] for i in shown],
        "categories": categories,
        "thumbs": thumbnails([paths[i] for i in shown], THUMBNAIL_PX),
    }
    figures: list[tuple[str, Any]] = [("summary", _ari_summary_figure(report))]
    runs_js: dict[str, Any] = {}
    sections = []
    for number, run in enumerate(report.runs):
        sections.append(_run_section(number, run, report, catalog, out, figures, runs_js))

    config = report.config
    info = report.catalog
    header = definition_list([
        ("catalogue", str(info.get("source") or "-")),
        ("products", f"{info.get('products')} ({info.get('dropped', 0)} dropped)"),
        ("categories", f"{len(categories)}: {', '.join(categories)}"),
        *category_items(info.get("category") or {}),
        ("text", text_field_label(report)),
        ("text columns", ", ".join(info.get("text_columns") or []) or "-"),
        ("seeds", ", ".join(map(str, config.seeds))),
        ("reducer", config.reducer),
        ("clusterers", ", ".join(config.clusterers)),
        ("clustered on", ", ".join(config.cluster_on)),
        ("t-SNE perplexity", f"{config.perplexity:g}"),
        *[(f"approximated: {what}", how) for what, how in report.approximations.items()],
    ])
    body = [
        "<h1>Clustering evaluation</h1>",
        header,
        "<h2>Runs, best first</h2>",
        '<p class="note">Click a column header to sort. Scores are mean &plusmn; sd over seeds.</p>',
        _ranked_table(report),
        "<h2>ARI per run</h2>",
        '<div class="plot" id="fig-summary"></div>',
        *sections,
        _dropped_list(info.get("dropped_rows") or []),
        _HOVER_PANEL,
    ]
    data = {"products": products, "runs": runs_js}
    page = render_page("Clustering evaluation", "\n".join(body), figures, data, _MAP_JS)
    path = out / PAGE_NAME
    atomic_write_text(path, page)
    return path


def _run_section(number: int, run: "RunResult", report: "EvaluationReport", catalog: "Catalog",
                 out: Path, figures: list, runs_js: dict) -> str:
    name = html.escape(run.name)
    parts = [f'<section id="run-{number}"><h2>{number + 1}. {name}</h2>',
             f'<p class="note">ARI ({html.escape(run.main_space)}) {plus_minus(run.mean("ari"), run.sd("ari"))}; '
             f't-SNE of the {html.escape(run.tsne_input)} features; {run.seconds:.1f} s</p>']
    if run.map_xy is not None and run.map_clusters is not None:
        figure, cluster_labels = _map_figure(run, report.categories, catalog, report.plotted())
        figures.append((f"map-{number}", figure))
        # noise (-1) points at its label, the last one
        runs_js[str(number)] = {"name": run.name, "clusters": [int(c) if c >= 0 else len(cluster_labels) - 1
                                                               for c in run.map_clusters[report.plotted()]],
                                "cluster_labels": cluster_labels}
        parts.append(f'<div class="plot map" id="fig-map-{number}" data-run="{number}"></div>')
    parts.append('<div class="row">')
    for space, result in run.spaces.items():
        figures.append((f"confusion-{number}-{space}", _confusion_figure(
            np.array(result.confusion), report.categories,
            f"{run.clusterer} on {space} (seed {report.config.seeds[0]})", noise=result.noise)))
        parts.append(f'<div class="plot confusion" id="fig-confusion-{number}-{space}"></div>')
    parts.append("</div>")
    grid = run.plots.get("cluster_examples")
    if grid and (out / grid).is_file():
        parts.append(f"<h3>Example products per cluster</h3>"
                     f'<img class="grid" alt="example products per cluster of {name}" '
                     f'src="{photo_data_uri(out / grid)}">')
    parts.append("</section>")
    return "\n".join(parts)


def _map_figure(run: "RunResult", categories: list[str], catalog: "Catalog", rows: np.ndarray | slice):
    """Two panels of the seed-0 map of the products ``rows``: coloured by true category and by
    cluster, a cluster taking the colour of the category it is matched to (as in the PNG map).
    A point's customdata is its position among ``rows``."""
    from plotly.subplots import make_subplots

    index = {c: i for i, c in enumerate(categories)}
    every = np.array([index[c] for c in catalog.labels])
    n_clusters = n_clusters_of(run.map_clusters)
    mapping = match_clusters(every, np.asarray(run.map_clusters), len(categories), n_clusters)  # as scored
    xy = np.asarray(run.map_xy[rows], dtype=np.float32)
    true, clusters = every[rows], np.asarray(run.map_clusters)[rows]
    palette = colour_palette(len(categories) + n_clusters)
    trace = _scatter_class(len(xy))
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.04, subplot_titles=(
        "True categories", html.escape(map_title(run))))  # the title names the user's clusterer spec
    for i, category in enumerate(categories):
        members = np.flatnonzero(true == i)
        fig.add_trace(trace(x=xy[members, 0], y=xy[members, 1], customdata=members.tolist(),
                            mode="markers", name=html.escape(category), legendgroup="true",
                            legendgrouptitle_text="true category" if i == 0 else None,
                            marker={"size": 6, "color": palette[i], "opacity": 0.85},
                            hovertemplate="%{text}<extra></extra>"), row=1, col=1)
    labels = []
    for c in range(n_clusters):
        matched = mapping.get(c)
        labels.append(f"cluster {c} → {categories[matched]}" if matched is not None
                      else f"cluster {c} (unmatched)")
    order = sorted(range(n_clusters), key=lambda c: mapping.get(c, len(categories) + c))
    if (clusters < 0).any():  # noise: the last label, drawn last, in grey
        labels.append("noise (in no cluster)")
        order.append(-1)
    for c in order:
        members = np.flatnonzero(clusters == c)
        matched = mapping.get(c)
        colour = palette[matched if matched is not None else len(categories) + c] if c >= 0 else NOISE_COLOUR
        fig.add_trace(trace(x=xy[members, 0], y=xy[members, 1], customdata=members.tolist(),
                            mode="markers", name=html.escape(labels[c]), legendgroup="clusters",
                            legendgrouptitle_text="cluster" if c == order[0] else None,
                            marker={"size": 6, "color": colour, "opacity": 0.85, "symbol": "diamond"},
                            hovertemplate="%{text}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(showticklabels=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, zeroline=False)
    fig.update_layout(height=560, margin={"l": 20, "r": 20, "t": 50, "b": 20},
                      legend={"groupclick": "toggleitem"}, hovermode="closest",
                      title={"text": f"t-SNE map of {_shown(len(xy), len(every))} (hover a point for its photo)",
                             "font": {"size": 14}})
    return fig, labels


def _shown(points: int, products: int) -> str:
    return f"{points} products" if points == products else f"{points} sampled of {products} products"


def _scatter_class(points: int):
    import plotly.graph_objects as go

    return go.Scattergl if points > WEBGL_ABOVE_POINTS else go.Scatter


def _confusion_figure(matrix: np.ndarray, categories: list[str], title: str, noise=None):
    """Heatmap of true category x cluster, each cluster named after its matched category;
    ``noise`` (products in no cluster, per category) is a last column."""
    import plotly.graph_objects as go
    from scipy.optimize import linear_sum_assignment

    n_true, n_pred = matrix.shape
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    matched = dict(zip(cols.tolist(), rows.tolist()))
    columns = [f"{j + 1}: {categories[matched[j]]}" if j in matched else f"{j + 1}: unmatched"
               for j in range(n_pred)]
    if noise is not None:
        matrix = np.column_stack([matrix.reshape(n_true, n_pred), np.asarray(noise)])
        columns.append("noise")
    return heatmap(go, matrix, [html.escape(c) for c in columns], [html.escape(c) for c in categories],
                    title, "cluster (named after its matched category)", "true category",
                    groups=first_level_groups(categories))


def _ari_summary_figure(report: "EvaluationReport"):
    import plotly.graph_objects as go

    names = [html.escape(r.name) for r in report.runs]
    fig = go.Figure()
    for space in report.config.cluster_on:
        fig.add_trace(go.Bar(name=space, x=names, y=[none_if_nan(r.mean("ari", space)) for r in report.runs],
                             error_y={"type": "data", "array": [none_if_nan(r.sd("ari", space)) for r in report.runs]},
                             hovertemplate="%{x}<br>ARI %{y:.3f}<extra>" + space + "</extra>"))
    fig.update_layout(barmode="group", height=420, yaxis={"title": {"text": "ARI (mean ± sd over seeds)"},
                                                          "range": [min(0, _min_ari(report)), 1]},
                      legend={"title": {"text": "clustered on"}}, margin={"t": 30, "b": 10})
    return fig


def _min_ari(report: "EvaluationReport") -> float:
    values = [r.mean("ari", s) for r in report.runs for s in report.config.cluster_on]
    return min([v for v in values if not math.isnan(v)], default=0.0)


def _ranked_table(report: "EvaluationReport") -> str:
    spaces = list(report.config.cluster_on)
    main = report.runs[0].main_space if report.runs else spaces[0]
    noisy = any(r.mean("noise", s) > 0 for r in report.runs for s in r.spaces)
    # scores against the levels above the one evaluated (evaluate/levels.py), when deeper than 1
    levels = sorted({k for r in report.runs for s in r.spaces.values() for k in (s.per_seed[0] if s.per_seed else {})
                     if "_level" in k})
    head = ["#", "run", "text", "image", "clusterer", *[f"ARI {s}" for s in spaces],
            *[f"{METRIC_TITLES[m]} ({main})" for m in METRICS if m != "ari"],
            *([f"noise ({main})"] if noisy else []), *[f"{m.split('_level')[0].upper()} level {m.split('_level')[1]} ({main})" for m in levels],
            "seconds"]
    rows = []
    for number, run in enumerate(report.runs):
        cells = [td(str(number + 1), number + 1),
                 f'<td><a href="#run-{number}">{html.escape(run.name)}</a></td>',
                 td(run.text or "-"), td(run.image or "-"), td(run.clusterer),
                 *[td(plus_minus(run.mean("ari", s), run.sd("ari", s)), run.mean("ari", s)) for s in spaces],
                 *[td(plus_minus(run.mean(m, main), run.sd(m, main)), run.mean(m, main)) for m in METRICS if m != "ari"],
                 *([td(plus_minus(run.mean("noise", main), run.sd("noise", main)), run.mean("noise", main))]
                   if noisy else []),
                 *[td(plus_minus(run.mean(m, main), run.sd(m, main)), run.mean(m, main)) for m in levels],
                 td(f"{run.seconds:.1f}", run.seconds)]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return table(head, rows)


def _dropped_list(rows: list[dict]) -> str:
    if not rows:
        return ""
    shown = rows[:200]
    items = "".join(f"<li>{html.escape(str(r.get('id')))} (line {html.escape(str(r.get('line')))}): "
                    f"{html.escape(str(r.get('problem')))}</li>" for r in shown)
    more = f"<p>... and {len(rows) - len(shown)} more (see results.json)</p>" if len(rows) > len(shown) else ""
    return f"<h2>Dropped products ({len(rows)})</h2><ul>{items}</ul>{more}"


_HOVER_PANEL = """<aside id="hover-panel"><img id="hover-photo" alt="">
<div class="name" id="hover-name">Hover a point of a map</div><div id="hover-details"></div></aside>"""

# Sorts on data-value (numbers) when a cell has one, on its text otherwise; blanks sort last.
_MAP_JS = """
function escapeHtml(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
function prepareMap(key, figure) {
  var run = DATA.runs[key.slice(4)];
  var products = DATA.products;
  figure.data.forEach(function (trace) {
    trace.text = trace.customdata.map(function (i) {
      return escapeHtml(products.names[i]) + "<br>category: "
        + escapeHtml(products.categories[products.category[i]])
        + "<br>" + escapeHtml(run.cluster_labels[run.clusters[i]]);
    });
  });
}
function showProduct(div, point) {
  var run = DATA.runs[div.getAttribute("data-run")];
  var products = DATA.products;
  var i = point.customdata;
  var thumb = products.thumbs[String(i)];
  var photo = document.getElementById("hover-photo");
  if (thumb) { photo.src = "data:image/jpeg;base64," + thumb; photo.alt = products.names[i]; }
  else { photo.removeAttribute("src"); photo.alt = "no photo"; }
  document.getElementById("hover-name").textContent = products.names[i];
  document.getElementById("hover-details").textContent =
    "category: " + products.categories[products.category[i]] + " | "
    + run.cluster_labels[run.clusters[i]] + " | run: " + run.name;
}
"""

# One figure at a time, yielding to the browser between them: the page shows and scrolls at
# once on a large catalogue while the maps fill in.
