"""report.html of `pm audit`: the estimated error rate per category, and the suspects as
cards (photo, text, declared vs suggested category, probabilities), sortable and filterable
by category in the page."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from placedemarche.audit.suspects import AuditResult
from placedemarche.core.files import atomic_write_text
from placedemarche.report.html_page import PAGE_NAME, definition_list, render_page, table, td, thumbnails

#: Suspects shown as cards (all of them are in suspects.csv); keeps the page quick to open.
MAX_CARDS = 500
THUMBNAIL_PX = 144
DESCRIPTION_CHARS = 320
TOP_PROBABILITIES = 3


def write_audit_html(result: AuditResult, out: Path) -> Path:
    """Write ``out/report.html`` for an audit."""
    import plotly.graph_objects as go

    summary = result.summary()
    config = summary["config"]
    catalog = result.catalog
    shown = result.suspects[:MAX_CARDS]
    accuracy = summary.get("out_of_fold_accuracy")
    body = [_CARDS_CSS, "<h1>Catalogue audit</h1>", definition_list([
        ("catalogue", str(catalog.source or "-")),
        ("products", f"{len(catalog)} ({len(catalog.dropped)} dropped)"),
        ("categories", f"{len(result.categories)}: {', '.join(result.categories)}"),
        *[(kind, ", ".join(specs) if isinstance(specs, (list, tuple)) else str(specs))
          for kind, specs in ((k, config.get(k)) for k in ("text", "image")) if specs],
        ("classifier", f"{config.get('classifier')} (fusion: {config.get('fusion')})"),
        ("probabilities", f"{result.group}, out-of-fold, {config.get('folds')} folds"
                          + (f" x {result.options.repeats} seeds (averaged)" if result.options.repeats > 1 else "")
                          + (f"; accuracy {accuracy:.3f}" if accuracy is not None else "")),
        ("confident learning", f"cleanlab find_label_issues(filter_by={result.options.filter_by}), "
                               f"ranked by get_label_quality_scores(method={result.options.rank_by})"),
    ])]
    body.append(f'<p class="headline">{len(result.suspects)} suspects ({summary["suspect_share"]:.1%} of the '
                f"products); cleanlab estimates {result.estimated_error_rate:.1%} of the declared categories "
                "wrong (1 &minus; overall label health score).</p>")

    names = [html.escape(h["category"]) for h in result.health]
    bars = go.Figure(go.Bar(x=names, y=[h["estimated_error_rate"] for h in result.health],
                            customdata=[[h["label_issues"], h["products"]] for h in result.health],
                            hovertemplate="%{x}<br>estimated error rate %{y:.1%}<br>"
                                          "%{customdata[0]} label issues among %{customdata[1]} products<extra></extra>"))
    bars.update_layout(height=360, yaxis={"title": {"text": "estimated error rate"}, "tickformat": ".0%"},
                       margin={"t": 20, "b": 10})
    rows = ["<tr>" + td(h["category"]) + td(str(h["products"]), h["products"])
            + td(str(h["label_issues"]), h["label_issues"])
            + td(f"{h['estimated_error_rate']:.1%}", h["estimated_error_rate"])
            + td(str(h["inverse_label_issues"]), h["inverse_label_issues"])
            + td(f"{h['label_quality']:.3f}", h["label_quality"]) + "</tr>" for h in result.health]
    body += ["<h2>Estimated error rate per category</h2>",
             '<p class="note">cleanlab\'s health summary: of the products declared in a category, the '
             "share whose category is estimated wrong; label issues estimated to belong to it; its "
             "label-quality score. Click a column header to sort.</p>",
             '<div class="plot" id="fig-health"></div>',
             table(["category", "products", "label issues", "estimated error rate", "issues belonging to it",
                    "label quality"], rows)]

    body += [f"<h2>Suspects ({len(result.suspects)})</h2>",
             '<p class="note">Lowest label quality first. The suggestion is the most probable other '
             "category. To correct the catalogue: copy suspects.csv, write <code>yes</code> in the "
             "<code>accept</code> column of the suggestions you agree with, then run <code>pm audit "
             "--apply COPY.csv --data CATALOGUE -o CORRECTED.csv</code>.</p>"
             + (f'<p class="note">The first {MAX_CARDS} are shown; every suspect is in suspects.csv.</p>'
                if len(result.suspects) > MAX_CARDS else ""),
             _controls(result), '<div id="cards" class="cards">',
             *_cards(result, shown), "</div>"]
    if not result.suspects:
        body.append("<p>No suspect: cleanlab finds every declared category consistent with the "
                    "out-of-fold probabilities.</p>")
    page = render_page("Catalogue audit", "\n".join(body), [("health", bars)], {}, _CARDS_JS)
    path = out / PAGE_NAME
    atomic_write_text(path, page)
    return path


def _controls(result: AuditResult) -> str:
    categories = sorted({s.declared for s in result.suspects} | {s.suggested for s in result.suspects})
    options = "".join(f'<option value="{html.escape(c, quote=True)}">{html.escape(c)}</option>' for c in categories)
    return ('<div class="controls"><label>category <select id="filter-category"><option value="">all</option>'
            f"{options}</select></label> "
            '<label><select id="filter-side"><option value="either">declared or suggested</option>'
            '<option value="declared">declared</option><option value="suggested">suggested</option></select></label> '
            '<label>sort by <select id="sort-by"><option value="rank">rank (lowest quality first)</option>'
            '<option value="p-suggested">probability of the suggestion</option>'
            '<option value="declared">declared category</option><option value="name">name</option></select></label> '
            '<span id="shown-count"></span></div>')


def _cards(result: AuditResult, shown) -> list[str]:
    catalog = result.catalog
    thumbs = thumbnails([_local_path(catalog.image_paths[s.index]) for s in shown], THUMBNAIL_PX)
    cards = []
    for number, suspect in enumerate(shown):
        P = result.probabilities[suspect.index]
        top = np.argsort(-P)[:TOP_PROBABILITIES]
        probabilities = "".join(
            f'<li><span class="bar" style="width:{100 * P[j]:.1f}%"></span>'
            f'<span class="label">{html.escape(result.categories[j])} {P[j]:.1%}</span></li>' for j in top)
        photo = (f'<img class="photo" alt="{html.escape(suspect.name, quote=True)}" '
                 f'src="data:image/jpeg;base64,{thumbs[str(number)]}">' if str(number) in thumbs
                 else '<div class="photo none">no photo</div>')
        description = catalog.descriptions[suspect.index]
        if len(description) > DESCRIPTION_CHARS:
            description = description[:DESCRIPTION_CHARS].rsplit(" ", 1)[0] + " ..."
        attrs = {"rank": suspect.rank, "quality": f"{suspect.quality:.6f}", "p-suggested": f"{suspect.p_suggested:.6f}",
                 "declared": suspect.declared, "suggested": suspect.suggested, "name": suspect.name.lower()}
        data = " ".join(f'data-{k}="{html.escape(str(v), quote=True)}"' for k, v in attrs.items())
        cards.append(
            f'<article class="card" {data}>{photo}<div class="body">'
            f'<div class="rank">#{suspect.rank} &middot; quality {suspect.quality:.3f} &middot; '
            f'id {html.escape(suspect.id)}</div>'
            f'<div class="name">{html.escape(suspect.name)}</div>'
            f'<div class="categories"><span class="declared">declared: {html.escape(suspect.declared)} '
            f'({suspect.p_declared:.1%})</span> <span class="arrow">&rarr;</span> '
            f'<span class="suggested">suggested: {html.escape(suspect.suggested)} ({suspect.p_suggested:.1%})</span></div>'
            f'<ul class="probabilities">{probabilities}</ul>'
            f'<p class="description">{html.escape(description)}</p></div></article>')
    return cards


def _local_path(path: Any) -> Path | None:
    return Path(path) if path is not None and not isinstance(path, str) else None


# The cards' own style, placed at the top of the page body (render_page holds the shared one).
_CARDS_CSS = """<style>
.controls { margin: 8px 0 12px; display: flex; gap: 16px; flex-wrap: wrap; align-items: center; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 12px; }
.card { display: flex; gap: 12px; border: 1px solid #ddd; border-radius: 6px; padding: 10px; }
.card[hidden] { display: none; }
.card .photo { width: 144px; height: 144px; object-fit: contain; background: #f5f5f5; flex: none; }
.card .photo.none { display: flex; align-items: center; justify-content: center; color: #999; }
.card .body { min-width: 0; } .card .rank { color: #666; font-size: 12px; }
.card .name { font-weight: 600; margin: 2px 0 4px; overflow-wrap: anywhere; }
.card .declared { color: #b00020; } .card .suggested { color: #1b5e20; font-weight: 600; }
.card .probabilities { list-style: none; padding: 0; margin: 6px 0; font-size: 12px; }
.card .probabilities li { position: relative; background: #f3f3f3; margin: 2px 0; height: 18px; }
.card .probabilities .bar { position: absolute; left: 0; top: 0; bottom: 0; background: #9ecae1; }
.card .probabilities .label { position: relative; padding-left: 4px; line-height: 18px; }
.card .description { color: #444; font-size: 12px; margin: 4px 0 0; overflow-wrap: anywhere; }
</style>"""

# Sorting and filtering move and hide the cards; nothing is fetched or re-rendered.
_CARDS_JS = """
(function () {
  var container = document.getElementById("cards");
  var cards = Array.prototype.slice.call(container.querySelectorAll("article.card"));
  var category = document.getElementById("filter-category");
  var side = document.getElementById("filter-side");
  var sortBy = document.getElementById("sort-by");
  var count = document.getElementById("shown-count");
  var keys = {
    "rank": function (c) { return [parseFloat(c.dataset.rank)]; },
    "p-suggested": function (c) { return [-parseFloat(c.dataset.pSuggested), parseFloat(c.dataset.rank)]; },
    "declared": function (c) { return [c.dataset.declared, parseFloat(c.dataset.rank)]; },
    "name": function (c) { return [c.dataset.name, parseFloat(c.dataset.rank)]; }
  };
  function compare(a, b) {
    for (var i = 0; i < a.length; i++) { if (a[i] < b[i]) { return -1; } if (a[i] > b[i]) { return 1; } }
    return 0;
  }
  function update() {
    var key = keys[sortBy.value];
    cards.sort(function (a, b) { return compare(key(a), key(b)); });
    var shown = 0;
    cards.forEach(function (card) {
      var wanted = category.value;
      var match = !wanted || (side.value !== "suggested" && card.dataset.declared === wanted)
                  || (side.value !== "declared" && card.dataset.suggested === wanted);
      card.hidden = !match;
      shown += match ? 1 : 0;
      container.appendChild(card);
    });
    count.textContent = shown + " of " + cards.length + " shown";
  }
  [category, side, sortBy].forEach(function (el) { el.addEventListener("change", update); });
  update();
})();
"""
