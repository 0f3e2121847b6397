"""report.html: one self-contained interactive page for an evaluation or a training run.

The page needs no network: plotly.js is embedded once, figures are plotly JSON drawn with
``Plotly.newPlot``, photos are base64 data URIs. Every string that comes from the user
(product, category, run and spec names) is HTML-escaped in markup and in plotly labels
(plotly renders a subset of HTML in them), and JSON put inside ``<script>`` has ``<``,
``>`` and ``&`` written as ``\\u003c``... so a name holding ``</script>`` cannot end it.

Usage::

    from placedemarche.core.html_report import write_evaluation_html

    page = write_evaluation_html(report, Path("results"), catalog)   # results/report.html
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .files import atomic_write_text
from .metrics import METRICS, match_clusters, n_clusters_of
from .progress import track
from .report import DISTINCT_COLOURS, NOISE_COLOUR, map_title, text_field_label

if TYPE_CHECKING:
    from .catalog import Catalog
    from .classify import TrainResult
    from .evaluate import EvaluationReport, RunResult

PAGE_NAME = "report.html"
THUMBNAIL_PX = 64
# SVG markers stay responsive up to a few thousand points and need no WebGL context
# (browsers cap those per page, one per map): only larger maps switch to scattergl.
WEBGL_ABOVE_POINTS = 5000
METRIC_TITLES = {"ari": "ARI", "nmi": "NMI", "homogeneity": "homog.", "completeness": "compl.",
                 "silhouette": "silhouette", "matched_accuracy": "matched acc."}


# -- evaluation ----------------------------------------------------------------------------
def write_evaluation_html(report: "EvaluationReport", out: Path, catalog: "Catalog") -> Path:
    """Write ``out/report.html``: ranked table, ARI summary, and per run an interactive map
    (hover shows the product's photo), confusion matrices and cluster photo grid."""
    categories = report.categories
    index = {c: i for i, c in enumerate(categories)}
    products = {
        "names": list(catalog.names),
        "category": [index[c] for c in catalog.labels],
        "categories": categories,
        "thumbs": _thumbnails(catalog.image_paths),
    }
    figures: list[tuple[str, Any]] = [("summary", _ari_summary_figure(report))]
    runs_js: dict[str, Any] = {}
    sections = []
    for number, run in enumerate(report.runs):
        sections.append(_run_section(number, run, report, catalog, out, figures, runs_js))

    config = report.config
    info = report.catalog
    header = _definition_list([
        ("catalogue", str(info.get("source") or "-")),
        ("products", f"{info.get('products')} ({info.get('dropped', 0)} dropped)"),
        ("categories", f"{len(categories)}: {', '.join(categories)}"),
        ("text", text_field_label(report)),
        ("text columns", ", ".join(info.get("text_columns") or []) or "-"),
        ("seeds", ", ".join(map(str, config.seeds))),
        ("reducer", config.reducer),
        ("clusterers", ", ".join(config.clusterers)),
        ("clustered on", ", ".join(config.cluster_on)),
        ("t-SNE perplexity", f"{config.perplexity:g}"),
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
    page = _page("Clustering evaluation", "\n".join(body), figures, data, _MAP_JS)
    path = out / PAGE_NAME
    atomic_write_text(path, page)
    return path


def _run_section(number: int, run: "RunResult", report: "EvaluationReport", catalog: "Catalog",
                 out: Path, figures: list, runs_js: dict) -> str:
    name = html.escape(run.name)
    parts = [f'<section id="run-{number}"><h2>{number + 1}. {name}</h2>',
             f'<p class="note">ARI ({html.escape(run.main_space)}) {_pm(run.mean("ari"), run.sd("ari"))}; '
             f't-SNE of the {html.escape(run.tsne_input)} features; {run.seconds:.1f} s</p>']
    if run.map_xy is not None and run.map_clusters is not None:
        figure, cluster_labels = _map_figure(run, report.categories, catalog)
        figures.append((f"map-{number}", figure))
        # noise (-1) points at its label, the last one
        runs_js[str(number)] = {"name": run.name, "clusters": [int(c) if c >= 0 else len(cluster_labels) - 1
                                                               for c in run.map_clusters],
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
                     f'src="{_photo_data_uri(out / grid)}">')
    parts.append("</section>")
    return "\n".join(parts)


def _map_figure(run: "RunResult", categories: list[str], catalog: "Catalog"):
    """Two panels of the seed-0 map: coloured by true category and by cluster, a cluster
    taking the colour of the category it is matched to (as in the PNG map)."""
    from plotly.subplots import make_subplots

    xy = np.asarray(run.map_xy, dtype=np.float32)
    index = {c: i for i, c in enumerate(categories)}
    true = np.array([index[c] for c in catalog.labels])
    clusters = np.asarray(run.map_clusters)
    n_clusters = n_clusters_of(clusters)
    mapping = match_clusters(true, clusters, len(categories), n_clusters)
    palette = _palette(len(categories) + n_clusters)
    trace = _scatter_class(len(xy))
    space = run.main_space
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
                      title={"text": f"t-SNE map of {len(xy)} products (hover a point for its photo)",
                             "font": {"size": 14}})
    return fig, labels


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
    return _heatmap(go, matrix, [html.escape(c) for c in columns], [html.escape(c) for c in categories],
                    title, "cluster (named after its matched category)", "true category")


def _heatmap(go, matrix, x, y, title: str, x_title: str, y_title: str):
    fig = go.Figure(go.Heatmap(z=np.asarray(matrix).tolist(), x=x, y=y, colorscale="Blues",
                               texttemplate="%{z}", showscale=False,
                               hovertemplate="true %{y}<br>" + x_title.split(" ")[0] + " %{x}<br>%{z} products<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text=y_title)
    fig.update_xaxes(tickangle=-35, title_text=x_title)
    side = 260 + 34 * max(len(x), len(y))
    fig.update_layout(title={"text": html.escape(title), "font": {"size": 13}}, width=side + 120,
                      height=side, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def _ari_summary_figure(report: "EvaluationReport"):
    import plotly.graph_objects as go

    names = [html.escape(r.name) for r in report.runs]
    fig = go.Figure()
    for space in report.config.cluster_on:
        fig.add_trace(go.Bar(name=space, x=names, y=[_none(r.mean("ari", space)) for r in report.runs],
                             error_y={"type": "data", "array": [_none(r.sd("ari", space)) for r in report.runs]},
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
    head = ["#", "run", "text", "image", "clusterer", *[f"ARI {s}" for s in spaces],
            *[f"{METRIC_TITLES[m]} ({main})" for m in METRICS if m != "ari"],
            *([f"noise ({main})"] if noisy else []), "seconds"]
    rows = []
    for number, run in enumerate(report.runs):
        cells = [_td(str(number + 1), number + 1),
                 f'<td><a href="#run-{number}">{html.escape(run.name)}</a></td>',
                 _td(run.text or "-"), _td(run.image or "-"), _td(run.clusterer),
                 *[_td(_pm(run.mean("ari", s), run.sd("ari", s)), run.mean("ari", s)) for s in spaces],
                 *[_td(_pm(run.mean(m, main), run.sd(m, main)), run.mean(m, main)) for m in METRICS if m != "ari"],
                 *([_td(_pm(run.mean("noise", main), run.sd("noise", main)), run.mean("noise", main))]
                   if noisy else []),
                 _td(f"{run.seconds:.1f}", run.seconds)]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return _table(head, rows)


def _dropped_list(rows: list[dict]) -> str:
    if not rows:
        return ""
    shown = rows[:200]
    items = "".join(f"<li>{html.escape(str(r.get('id')))} (line {html.escape(str(r.get('line')))}): "
                    f"{html.escape(str(r.get('problem')))}</li>" for r in shown)
    more = f"<p>... and {len(rows) - len(shown)} more (see results.json)</p>" if len(rows) > len(shown) else ""
    return f"<h2>Dropped products ({len(rows)})</h2><ul>{items}</ul>{more}"


def _thumbnails(paths: Sequence[Path | None], size: int = THUMBNAIL_PX) -> dict[str, str]:
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


def _photo_data_uri(path: Path) -> str:
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


# -- training ------------------------------------------------------------------------------
def write_training_html(result: "TrainResult", out: Path, histories: Sequence[Sequence[dict]] = (),
                        final_history: Sequence[dict] = ()) -> Path:
    """Write ``out/report.html``: scores per modality, per-fold table, per-class F1,
    confusion matrices of the out-of-fold predictions and fine-tuning learning curves."""
    import plotly.graph_objects as go

    summary = result.summary
    categories = result.model.categories
    results = summary.get("results") or {}
    main = summary.get("main")
    info = summary.get("catalog", {})
    config = summary.get("config", {})
    figures: list[tuple[str, Any]] = []
    body = ["<h1>Classifier training</h1>", _definition_list([
        ("catalogue", str(info.get("source") or "-")),
        ("products", f"{info.get('products')} ({info.get('dropped', 0)} dropped)"),
        ("categories", f"{len(categories)}: {', '.join(categories)}"),
        *[(kind, ", ".join(specs) if isinstance(specs, (list, tuple)) else str(specs))
          for kind, specs in ((k, config.get(k)) for k in ("text", "image")) if specs],
        ("text field", str(config.get("text_field"))),
        ("classifier", f"{config.get('classifier')} (fusion: {config.get('fusion')})"),
        ("fine-tuned", "yes" if config.get("finetune") else "no"),
        ("folds", str(summary.get("folds"))),
        ("main prediction", str(main)),
    ])]
    if not results:
        body.append("<p>No cross-validation was run (<code>--folds 0</code>): "
                    "there are no out-of-fold scores to show.</p>")
    else:
        main_scores = summary["mean"]
        body.append(f'<p class="headline">{html.escape(str(main))}: accuracy '
                    f'{_pm(main_scores["accuracy"], main_scores["accuracy_sd"])}, macro F1 '
                    f'{_pm(main_scores["macro_f1"], main_scores["macro_f1_sd"])} '
                    f"(out-of-fold, {len(result.folds)} stratified folds)</p>")
        head = ["prediction", "accuracy", "macro F1", *categories]
        rows = []
        for name, res in results.items():
            rows.append("<tr>" + _td(name) + _td(_pm(res["accuracy_mean"], res["accuracy_sd"]), res["accuracy_mean"])
                        + _td(_pm(res["macro_f1_mean"], res["macro_f1_sd"]), res["macro_f1_mean"])
                        + "".join(_td(f"{res['per_class_f1'][c]:.3f}", res["per_class_f1"][c]) for c in categories)
                        + "</tr>")
        body += ["<h2>Scores per prediction</h2>",
                 '<p class="note">Accuracy and macro F1: mean &plusmn; sd over folds; per-class F1 of '
                 "the out-of-fold predictions. Click a column header to sort.</p>", _table(head, rows)]
        body += ["<h2>Per fold</h2>", _table(list(result.folds[0]),
                                             ["<tr>" + "".join(_td(str(v), v if isinstance(v, (int, float)) else None)
                                                               for v in fold.values()) + "</tr>"
                                              for fold in result.folds])]
        f1 = go.Figure([go.Bar(name=html.escape(name), x=[html.escape(c) for c in categories],
                               y=[res["per_class_f1"][c] for c in categories],
                               hovertemplate="%{x}<br>F1 %{y:.3f}<extra>" + html.escape(name) + "</extra>")
                        for name, res in results.items()])
        f1.update_layout(barmode="group", height=400, yaxis={"title": {"text": "F1 (out-of-fold)"}, "range": [0, 1]},
                         margin={"t": 30, "b": 10})
        figures.append(("f1", f1))
        body += ["<h2>Per-class F1</h2>", '<div class="plot" id="fig-f1"></div>',
                 "<h2>Confusion matrices (out-of-fold)</h2>", '<div class="row">']
        for number, (name, res) in enumerate(sorted(results.items(), key=lambda kv: kv[0] != main)):
            escaped = [html.escape(c) for c in categories]
            figures.append((f"confusion-{number}", _heatmap(
                go, res["confusion_matrix"], escaped, escaped, f"{name}: accuracy {res['accuracy_mean']:.3f}",
                "predicted category", "true category")))
            body.append(f'<div class="plot confusion" id="fig-confusion-{number}"></div>')
        body.append("</div>")
    curves = list(histories) or ([list(final_history)] if final_history else [])
    if curves:
        figures.append(("curves", _learning_curves_figure(curves)))
        body += ["<h2>Fine-tuning learning curves</h2>",
                 '<p class="note">Dotted line: top layers unfrozen.</p>',
                 '<div class="plot" id="fig-curves"></div>']
    page = _page("Classifier training", "\n".join(body), figures, {}, "")
    path = out / PAGE_NAME
    atomic_write_text(path, page)
    return path


def _learning_curves_figure(histories: list[list[dict]]):
    from plotly.subplots import make_subplots

    import plotly.graph_objects as go

    palette = _palette(len(histories))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for number, history in enumerate(histories, start=1):
        epochs = list(range(1, len(history) + 1))
        label = f"fold {number}" if len(histories) > 1 else "final fit"
        for col, metric in enumerate(("loss", "accuracy"), start=1):
            for prefix, dash in (("", "solid"), ("val_", "dash")):
                values = [_none(h.get(prefix + metric)) for h in history]
                if all(v is None for v in values):
                    continue
                fig.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers",
                                         name=f"{label} {'validation' if prefix else 'train'}",
                                         legendgroup=label, showlegend=col == 1,
                                         line={"color": palette[number - 1], "dash": dash}), row=1, col=col)
            switch = next((i for i, h in enumerate(history) if h.get("phase") == "finetune"), None)
            if switch:
                fig.add_vline(x=switch + 0.5, line={"color": "grey", "dash": "dot", "width": 1}, row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=420, margin={"t": 40, "b": 10})
    return fig


# -- page ----------------------------------------------------------------------------------
def script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (see the module docstring)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _page(title: str, body: str, figures: list[tuple[str, Any]], data: dict, extra_js: str) -> str:
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


def _palette(n: int) -> list[str]:
    """The PNG plots' colours (a category looks the same on both), then Alphabet past twenty."""
    import plotly.express as px

    colours = list(DISTINCT_COLOURS) + px.colors.qualitative.Alphabet
    return [colours[i % len(colours)] for i in range(max(n, 1))]


def _table(head: list[str], rows: list[str]) -> str:
    header = "".join(f'<th title="sort">{html.escape(str(h))}</th>' for h in head)
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _td(text: str, value: float | None = None) -> str:
    """A cell; ``value`` (a number) is what the column sorts on."""
    if value is None:
        return f"<td>{html.escape(text)}</td>"
    sort = "" if isinstance(value, float) and math.isnan(value) else repr(float(value))
    return f'<td class="num" data-value="{sort}">{html.escape(text)}</td>'


def _definition_list(items: list[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items) + "</dl>"


def _pm(mean: float, sd: float) -> str:
    if mean is None or math.isnan(mean):
        return "-"
    return f"{mean:.3f} ± {sd:.3f}" if sd is not None and not math.isnan(sd) else f"{mean:.3f}"


def _none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px 32px 48px; color: #222; }
body:has(#hover-panel) { margin-right: 300px; }
h1 { margin-top: 0; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dt { color: #666; } dd { margin: 0; }
table.sortable { border-collapse: collapse; font-size: 13px; }
.scroll { overflow-x: auto; }
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

_HOVER_PANEL = """<aside id="hover-panel"><img id="hover-photo" alt="">
<div class="name" id="hover-name">Hover a point of a map</div><div id="hover-details"></div></aside>"""

# Sorts on data-value (numbers) when a cell has one, on its text otherwise; blanks sort last.
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
