"""report.html of an evaluation and of a training: written, self-contained, escaped, and drawn
by a real headless Chromium (skipped only when no Chromium binary is installed)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from placedemarche.core import plugins
from placedemarche.data.catalog import load_catalog
from placedemarche.classify import TrainConfig, train
from placedemarche.evaluate.evaluator import EvaluationConfig, evaluate_combinations
from placedemarche.report.evaluation import write_evaluation_report
from placedemarche.report.training import write_training_report
from placedemarche.report.html_page import script_json
from placedemarche.report.html_training import write_training_html

from helpers import CHROMIUM_FLAGS, MeanColourPlugin, make_catalog

EVIL_NAME = "<script>alert(1)</script>"
EVIL_CATEGORY = "Baby <b>Care</b> & Co"
FAST = EvaluationConfig(seeds=(0,), perplexity=5.0, reducer="pca:n_components=10")
# Anything that would load a script, style, image or frame from elsewhere.
REMOTE = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.I)


def _evil_catalog(root: Path) -> Path:
    """The tiny catalogue with a product and a category whose names are markup."""
    path = make_catalog(root)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["product_name"] = EVIL_NAME
    for row in rows:
        if row["category"] == "Baby Care":
            row["category"] = EVIL_CATEGORY
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    """One evaluation (text, image and fused runs) shared by the tests of this module."""
    root = tmp_path_factory.mktemp("html-evaluation")
    catalog = load_catalog(_evil_catalog(root / "data")).validated()
    name = plugins.register_plugin(MeanColourPlugin, name="html-report-test-plugin", provider="tests")
    try:
        report = evaluate_combinations(catalog, text=["tfidf:min_df=1"], image=["mean-colour"],
                                       config=FAST)
        write_evaluation_report(report, root / "out")
    finally:
        plugins.unregister_plugin(name)
    return report, root / "out", catalog


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    root = tmp_path_factory.mktemp("html-training")
    catalog = load_catalog(_evil_catalog(root / "data")).validated()
    name = plugins.register_plugin(MeanColourPlugin, name="html-report-test-plugin", provider="tests")
    try:
        result = train(catalog, TrainConfig(text="tfidf:min_df=1", image="mean-colour", folds=3),
                       out=root / "model")
        write_training_report(result, root / "model")
    finally:
        plugins.unregister_plugin(name)
    return result, root / "model"


def _embedded(page: str, name: str):
    """The JSON the page assigns to ``const name`` (one line: newlines in JSON are escaped)."""
    return json.loads(re.search(rf"const {name} = (.*?);(?:\n|</script>)", page).group(1))


def _check_self_contained_and_escaped(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert not REMOTE.search(page)
    assert "<script src" not in page.lower()
    assert EVIL_NAME not in page and "<b>Care</b>" not in page
    assert page.count("<script>/**\n* plotly.js v") == 1  # embedded once, whatever the figures


def test_evaluation_writes_a_self_contained_escaped_page(evaluation):
    report, out, catalog = evaluation
    assert report.files["html"] == "report.html"
    page = (out / "report.html").read_text(encoding="utf-8")
    _check_self_contained_and_escaped(page)
    data = _embedded(page, "DATA")
    figures = _embedded(page, "FIGURES")
    assert data["products"]["names"][0] == EVIL_NAME  # the \u003c escapes decode to the real name
    assert len(data["products"]["thumbs"]) == len(catalog) == 18
    assert set(data["runs"]) == {"0", "1", "2"}
    assert {f"map-{i}" for i in range(3)} | {"summary"} <= set(figures)
    assert sum(f"confusion-{i}-{s}" in figures for i in range(3) for s in ("raw", "reduced", "tsne")) == 9
    # every product is on the left map once, coloured by its category
    left = [t for t in figures["map-0"]["data"] if t.get("xaxis", "x") == "x"]
    assert sorted(i for t in left for i in t["customdata"]) == list(range(18))
    assert {t["name"] for t in left} == {"Kitchen", "Watches", "Baby &lt;b&gt;Care&lt;/b&gt; &amp; Co"}
    assert len({t["marker"]["color"] for t in left}) == 3
    # the image runs embed their cluster photo grid
    assert page.count('<img class="grid"') == 2
    # one ranked-table row per run, linking to its section
    assert page.count('<a href="#run-') == 3


def test_training_writes_a_page_with_folds_f1_and_confusion(training):
    result, out = training
    assert result.files["html"] == "report.html"
    page = (out / "report.html").read_text(encoding="utf-8")
    _check_self_contained_and_escaped(page)
    figures = _embedded(page, "FIGURES")
    assert set(figures) == {"f1", "risk-coverage", "confusion-0", "confusion-1", "confusion-2"}
    assert "Baby &lt;b&gt;Care&lt;/b&gt; &amp; Co" in page
    assert page.count("</tr>") == (1 + 3) + (1 + 3)  # header and a row per prediction; per fold
    assert json.loads((out / "metrics.json").read_text())["files"]["html"] == "report.html"


def test_training_page_draws_learning_curves(training, tmp_path):
    result, _ = training
    history = [{"phase": "head" if e < 2 else "finetune", "loss": 1.0 / (e + 1), "accuracy": 0.5 + e / 10,
                "val_loss": 1.2 / (e + 1), "val_accuracy": 0.4 + e / 10} for e in range(4)]
    page = write_training_html(result, tmp_path, [history, history], history).read_text(encoding="utf-8")
    figures = _embedded(page, "FIGURES")
    assert len(figures["curves"]["data"]) == 2 * 2 * 2  # folds x (loss, accuracy) x (train, validation)


def test_script_json_cannot_close_the_script_element():
    value = {"name": "</script><!-- & \u2028", "x": [1, 2.5]}
    text = script_json(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == value


# -- a real browser ------------------------------------------------------------------------


def _open(browser, path: Path):
    """Open ``path``, recording console errors, uncaught exceptions and any network request."""
    page = browser.new_page()
    problems: dict[str, list[str]] = {"errors": [], "requests": []}
    page.on("console", lambda m: m.type == "error" and problems["errors"].append(m.text))
    page.on("pageerror", lambda e: problems["errors"].append(str(e)))

    def local_only(route):
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:")):
            return route.continue_()
        problems["requests"].append(url)
        return route.abort()

    page.route("**/*", local_only)
    page.add_init_script("window.alert = function () { window.__alerted = true; };")
    page.goto(path.as_uri())
    page.wait_for_function("() => document.body.getAttribute('data-drawn') === 'true'", timeout=60_000)
    assert page.evaluate("() => Array.from(document.querySelectorAll('div.plot'))"
                         ".every(div => div.querySelector('.main-svg'))")
    return page, problems


def _distinct_colours(png: bytes) -> int:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return len(im.convert("RGB").getcolors(maxcolors=1 << 24))


def test_pages_render_in_headless_chromium(chromium, evaluation, training, tmp_path):
    from playwright.sync_api import sync_playwright

    _, out, catalog = evaluation
    with sync_playwright() as pw:
        # the system Chromium, never a downloaded one; the profile directory is the --user-data-dir
        browser = pw.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=chromium, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 900})
        try:
            page, problems = _open(browser, out / "report.html")
            # every product appears once per panel (true categories, clusters) of each map
            for run in range(3):
                points = page.eval_on_selector_all(f"#fig-map-{run} .scatterlayer .point", "els => els.length")
                assert points == 2 * len(catalog)
            drawn = page.evaluate("() => document.getElementById('fig-map-0').data"
                                  ".filter(t => (t.xaxis || 'x') === 'x')"
                                  ".reduce((n, t) => n + t.customdata.length, 0)")
            assert drawn == len(catalog)
            assert page.eval_on_selector_all(".confusion .heatmaplayer image, .confusion .hm image",
                                             "els => els.length") >= 9

            # hovering a point shows its photo and name in the side panel
            page.locator("#fig-map-0").scroll_into_view_if_needed()
            box = page.locator("#fig-map-0 .scatterlayer .point").first.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_function("() => document.getElementById('hover-name').textContent"
                                   " !== 'Hover a point of a map'", timeout=5_000)
            assert page.get_attribute("#hover-photo", "src").startswith("data:image/jpeg;base64,")
            assert page.text_content("#hover-name") in catalog.names

            # the ranked table sorts when a header is clicked (twice: descending)
            first_cells = "() => Array.from(document.querySelectorAll('table.sortable tbody tr'))" \
                          ".map(r => r.cells[0].textContent)"
            assert page.evaluate(first_cells) == ["1", "2", "3"]
            page.click("table.sortable th:first-child")
            page.click("table.sortable th:first-child")
            assert page.evaluate(first_cells) == ["3", "2", "1"]

            assert page.evaluate("() => window.__alerted === undefined")
            map_png = page.locator("#fig-map-0").screenshot()
            assert _distinct_colours(map_png) > 20  # not blank: points in several colours, text
            assert problems == {"errors": [], "requests": []}

            page, problems = _open(browser, training[1] / "report.html")
            assert page.eval_on_selector_all("div.plot", "els => els.length") == 5  # per-class F1, risk-coverage, three confusion matrices
            assert _distinct_colours(page.screenshot(full_page=True)) > 20
            assert page.evaluate("() => window.__alerted === undefined")
            assert problems == {"errors": [], "requests": []}
        finally:
            browser.close()
