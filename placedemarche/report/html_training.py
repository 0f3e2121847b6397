"""report.html of `pm train`: scores per modality, per-fold table, per-class F1, confusion
matrices of the out-of-fold predictions, and fine-tuning learning curves."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from placedemarche.classify.threshold import describe as describe_decision
from placedemarche.core.files import atomic_write_text
from placedemarche.data.categories import first_level_groups
from placedemarche.report.html_page import category_items
from placedemarche.report.html_page import PAGE_NAME, colour_palette, definition_list, heatmap, none_if_nan, plus_minus, render_page, table, td

if TYPE_CHECKING:
    from placedemarche.classify import TrainResult

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
    body = ["<h1>Classifier training</h1>", definition_list([
        ("catalogue", str(info.get("source") or "-")),
        ("products", f"{info.get('products')} ({info.get('dropped', 0)} dropped)"),
        ("categories", f"{len(categories)}: {', '.join(categories)}"),
        *category_items(info.get("category") or {}),
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
                    f'{plus_minus(main_scores["accuracy"], main_scores["accuracy_sd"])}, macro F1 '
                    f'{plus_minus(main_scores["macro_f1"], main_scores["macro_f1_sd"])} '
                    f"(out-of-fold, {len(result.folds)} stratified folds)</p>")
        head = ["prediction", "accuracy", "macro F1", *categories]
        rows = []
        for name, res in results.items():
            rows.append("<tr>" + td(name) + td(plus_minus(res["accuracy_mean"], res["accuracy_sd"]), res["accuracy_mean"])
                        + td(plus_minus(res["macro_f1_mean"], res["macro_f1_sd"]), res["macro_f1_mean"])
                        + "".join(td(f"{res['per_class_f1'][c]:.3f}", res["per_class_f1"][c]) for c in categories)
                        + "</tr>")
        decision = summary.get("decision")
        if decision:
            body.append(f'<p class="headline" id="decision">Decision threshold: {html.escape(describe_decision(decision))}.</p>')
        body += ["<h2>Scores per prediction</h2>",
                 '<p class="note">Accuracy and macro F1: mean &plusmn; sd over folds; per-class F1 of '
                 "the out-of-fold predictions. Click a column header to sort.</p>", table(head, rows)]
        body += ["<h2>Per fold</h2>", table(list(result.folds[0]),
                                             ["<tr>" + "".join(td(str(v), v if isinstance(v, (int, float)) else None)
                                                               for v in fold.values()) + "</tr>"
                                              for fold in result.folds])]
        f1 = go.Figure([go.Bar(name=html.escape(name), x=[html.escape(c) for c in categories],
                               y=[res["per_class_f1"][c] for c in categories],
                               hovertemplate="%{x}<br>F1 %{y:.3f}<extra>" + html.escape(name) + "</extra>")
                        for name, res in results.items()])
        f1.update_layout(barmode="group", height=400, yaxis={"title": {"text": "F1 (out-of-fold)"}, "range": [0, 1]},
                         margin={"t": 30, "b": 10})
        figures.append(("f1", f1))
        if decision:
            figures.append(("risk-coverage", _risk_coverage_figure(decision)))
            body += ["<h2>Risk–coverage: which predictions to accept automatically</h2>",
                     '<p class="note">For every threshold on the top probability: the share of products '
                     "accepted (coverage) and the precision of the accepted predictions, from the "
                     "out-of-fold predictions. The marker is the threshold kept for the target precision; "
                     "<code>pm serve --target-precision</code> can pick another point of this curve.</p>",
                     '<div class="plot" id="fig-risk-coverage"></div>']
        body += _level_table(results, decision)
        body += ["<h2>Per-class F1</h2>", '<div class="plot" id="fig-f1"></div>',
                 "<h2>Confusion matrices (out-of-fold)</h2>", '<div class="row">']
        for number, (name, res) in enumerate(sorted(results.items(), key=lambda kv: kv[0] != main)):
            escaped = [html.escape(c) for c in categories]
            figures.append((f"confusion-{number}", heatmap(
                go, res["confusion_matrix"], escaped, escaped, f"{name}: accuracy {res['accuracy_mean']:.3f}",
                "predicted category", "true category", groups=first_level_groups(categories))))
            body.append(f'<div class="plot confusion" id="fig-confusion-{number}"></div>')
        body.append("</div>")
    curves = list(histories) or ([list(final_history)] if final_history else [])
    if curves:
        figures.append(("curves", _learning_curves_figure(curves)))
        body += ["<h2>Fine-tuning learning curves</h2>",
                 '<p class="note">Dotted line: top layers unfrozen.</p>',
                 '<div class="plot" id="fig-curves"></div>']
    page = render_page("Classifier training", "\n".join(body), figures, {}, "")
    path = out / PAGE_NAME
    atomic_write_text(path, page)
    return path


def _risk_coverage_figure(decision: dict[str, Any]):
    import plotly.graph_objects as go

    fig = go.Figure()
    groups = decision.get("by_group") or {decision["group"]: decision}
    palette = colour_palette(len(groups))
    for colour, (group, point) in zip(palette, groups.items()):
        curve = point["curve"]
        fig.add_trace(go.Scatter(
            x=curve["coverage"], y=curve["precision"], customdata=curve["threshold"], mode="lines",
            name=html.escape(group), line={"color": colour},
            hovertemplate="coverage %{x:.1%}<br>precision %{y:.3f}<br>threshold %{customdata:.3f}<extra>"
                          + html.escape(group) + "</extra>"))
        if point.get("precision") is not None:
            fig.add_trace(go.Scatter(x=[point["coverage"]], y=[point["precision"]], mode="markers",
                                     marker={"color": colour, "size": 11, "symbol": "diamond"},
                                     name=f"{html.escape(group)}: threshold {point['threshold']:.3f}"))
    fig.add_hline(y=decision["target_precision"], line={"color": "grey", "dash": "dot", "width": 1})
    fig.update_layout(height=420, margin={"t": 30, "b": 10},
                      xaxis={"title": {"text": "coverage (share of products accepted)"}, "tickformat": ".0%"},
                      yaxis={"title": {"text": "precision of the accepted predictions"}})
    return fig


def _level_table(results: dict, decision: dict | None = None) -> list[str]:
    """Out-of-fold accuracy and macro-F1 with the predictions cut to each level of the category
    tree (a deeper-level run only)."""
    levels = sorted({lvl for res in results.values() for lvl in res.get("levels", {})}, key=int)
    if not levels:
        return []
    metrics = {"accuracy": "accuracy", "macro_f1": "macro F1", "hF": "hF"}
    head = ["prediction", *[f"level {lvl} {label}" for lvl in levels for label in metrics.values()]]
    rows = ["<tr>" + td(name) + "".join(td(f"{res['levels'][lvl][m]:.3f}", res["levels"][lvl][m])
                                       if m in res["levels"][lvl] else td("-")
                                       for lvl in levels for m in metrics) + "</tr>"
            for name, res in results.items() if res.get("levels")]
    return ["<h2>Scores per level of the category tree</h2>",
            '<p class="note">Out-of-fold predictions cut to each level: a product put in the right branch '
            "counts as right at the levels above its error. hF: hierarchical F1, credit for the shared "
            "part of the path (hP = hR here: every prediction is a full path).</p>", table(head, rows),
            *_level_decisions(decision or {})]


def _level_decisions(decision: dict) -> list[str]:
    """The decision threshold of each level and what the stopped paths score."""
    levels, stopped = decision.get("levels") or {}, decision.get("stopped")
    if not levels or not stopped:
        return []
    rows = ["<tr>" + td(f"level {lvl}") + td(f"{p['threshold']:.3f}" if p.get("precision") is not None else "none")
            + td(f"{p['coverage']:.1%}", p["coverage"]) + td(f"{stopped['stopped_at'].get(lvl, 0):.1%}") + "</tr>"
            for lvl, p in sorted(levels.items(), key=lambda kv: int(kv[0]))]
    return ["<h3>Answering down to the deepest sure level</h3>",
            f'<p class="note">{html.escape(decision["group"])}: a product is answered with its path down to the '
            "deepest level whose summed probability reaches that level's threshold (target precision "
            f"{decision['target_precision']:g} at each level). The stopped paths score hP {stopped['hP']:.3f}, "
            f"hR {stopped['hR']:.3f}, hF {stopped['hF']:.3f}; {stopped['stopped_at'].get('0', 0):.1%} stop "
            "before the first level (review).</p>",
            table(["level", "threshold", "coverage", "answered down to it"], rows)]


def _learning_curves_figure(histories: list[list[dict]]):
    from plotly.subplots import make_subplots

    import plotly.graph_objects as go

    palette = colour_palette(len(histories))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for number, history in enumerate(histories, start=1):
        epochs = list(range(1, len(history) + 1))
        label = f"fold {number}" if len(histories) > 1 else "final fit"
        for col, metric in enumerate(("loss", "accuracy"), start=1):
            for prefix, dash in (("", "solid"), ("val_", "dash")):
                values = [none_if_nan(h.get(prefix + metric)) for h in history]
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
