"""pm audit: suspects found by confident learning on out-of-fold probabilities, its files and
terminal output, --apply of a reviewed suspects.csv (round trip and one-line errors), and its
report.html in a real headless Chromium.

The tiny catalogue names each product after its category, so every flipped label below is
plain to any model: these tests check the plumbing (the right ids come out, files, apply),
not the quality of the audit, which bench/bench_audit.py measures on the Flipkart sample."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import CHROMIUM_FLAGS, make_catalog, write_csv
from placedemarche.cli.main import cli

FLIPS = {"wat001": "Kitchen", "kit004": "Baby Care", "bab007": "Watches"}
EVIL_NAME = "<script>alert(1)</script> Baby Care"
TFIDF = "tfidf:min_df=1"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _flipped_catalog(root: Path) -> Path:
    """The tiny catalogue (10 products per category) with three categories flipped, and a
    product whose name is markup."""
    path = make_catalog(root, per_category=10)
    rows = _rows(path)
    for row in rows:
        row["category"] = FLIPS.get(row["uniq_id"], row["category"])
        if row["uniq_id"] == "bab007":
            row["product_name"] = EVIL_NAME
    write_csv(path, rows)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """One `pm audit` run on the flipped tiny catalogue, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("audit")
    data = _flipped_catalog(root / "data")
    before = _sha(data)
    result = CliRunner().invoke(cli, ["audit", "--text", TFIDF, "--data", str(data), "--folds", "3",
                                      "--out", str(root / "out"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert _sha(data) == before  # auditing reads the catalogue, never writes it
    return data, root / "out", result.output


def test_audit_finds_the_flipped_categories(audited):
    data, out, _ = audited
    suspects = _rows(out / "suspects.csv")
    assert list(suspects[0]) == ["rank", "id", "name", "declared_category", "suggested_category", "quality",
                                 "p_declared", "p_suggested", "accept"]
    found = {row["id"]: row for row in suspects}
    assert set(FLIPS) <= set(found)
    truth = {row["uniq_id"]: row["uniq_id"][:3] for row in _rows(data)}
    for pid, declared in FLIPS.items():
        assert found[pid]["declared_category"] == declared
        assert found[pid]["suggested_category"][:3].lower() == truth[pid]  # back to where it came from
        assert found[pid]["accept"] == ""
    assert [int(r["rank"]) for r in suspects] == list(range(1, len(suspects) + 1))
    qualities = [float(r["quality"]) for r in suspects]
    assert qualities == sorted(qualities)
    assert all(float(r["p_suggested"]) > float(r["p_declared"]) for r in suspects)

    results = json.loads((out / "results.json").read_text())
    assert results["suspects"] == len(suspects)
    assert results["group"] == "text"
    assert results["audit"] == {"group": None, "repeats": 3, "filter_by": "lowest_quality",
                                "rank_by": "self_confidence"}
    assert results["files"] == {"suspects": "suspects.csv", "categories": "categories.csv",
                                "results": "results.json", "html": "report.html"}
    assert 0 < results["estimated_error_rate"] <= 0.3
    categories = _rows(out / "categories.csv")
    assert {r["category"] for r in categories} == {"Watches", "Kitchen", "Baby Care"}
    assert sum(int(r["products"]) for r in categories) == 30
    assert all(0 <= float(r["estimated_error_rate"]) <= 1 for r in categories)
    assert results["categories"][0]["estimated_error_rate"] == max(float(r["estimated_error_rate"]) for r in categories)


def test_audit_terminal_shows_top_suspects_and_files(audited):
    _, out, output = audited
    assert "suspects (lowest label quality first)" in output
    for pid in FLIPS:
        assert pid in output
    assert f"Suspects: {out / 'suspects.csv'}" in output
    assert f"Report: {out / 'report.html'}" in output
    assert output.rstrip().splitlines()[-1] == f"Report: {out / 'report.html'}"
    assert re.search(r"\d+ suspects among 30 products", output)


def test_apply_round_trip(audited, tmp_path):
    data, out, _ = audited
    reviewed = tmp_path / "reviewed.csv"
    rows = _rows(out / "suspects.csv")
    for row in rows:
        row["accept"] = "yes" if row["id"] in ("wat001", "kit004") else "no"
    rows[-1]["accept"] = "" if rows[-1]["id"] not in ("wat001", "kit004") else rows[-1]["accept"]
    write_csv(reviewed, rows)
    before = _sha(data)
    corrected = tmp_path / "corrected.csv"
    result = CliRunner().invoke(cli, ["audit", "--apply", str(reviewed), "--data", str(data), "-o", str(corrected)])
    assert result.exit_code == 0, result.output
    assert "2 categories corrected" in result.output
    assert _sha(data) == before
    old, new = _rows(data), _rows(corrected)
    assert [r["uniq_id"] for r in old] == [r["uniq_id"] for r in new]
    assert list(old[0]) == list(new[0])
    for a, b in zip(old, new):
        expected = {"wat001": "Watches", "kit004": "Kitchen"}.get(a["uniq_id"], a["category"])
        assert b["category"] == expected
        assert {k: v for k, v in a.items() if k != "category"} == {k: v for k, v in b.items() if k != "category"}


def test_apply_keeps_a_category_tree_a_tree(tmp_path):
    """A Flipkart product_category_tree cell is replaced by a one-level tree the loader reads."""
    from placedemarche.audit.apply import apply_review
    from placedemarche.data.catalog import load_catalog

    data = tmp_path / "catalog.csv"
    write_csv(data, [
        {"uniq_id": "a", "product_name": "steel watch", "product_category_tree": '["Kitchen >> Pans >> Steel"]'},
        {"uniq_id": "b", "product_name": "pan", "product_category_tree": '["Kitchen >> Pans"]'},
    ])
    reviewed = tmp_path / "reviewed.csv"
    write_csv(reviewed, [{"id": "a", "suggested_category": "Watches", "accept": "Yes"}])
    result = apply_review(data, reviewed, tmp_path / "fixed.csv")
    assert result.changed == {"a": ("Kitchen", "Watches")}
    assert _rows(tmp_path / "fixed.csv")[0]["product_category_tree"] == '["Watches"]'
    assert load_catalog(tmp_path / "fixed.csv").labels == ["Watches", "Kitchen"]


def test_apply_parquet_round_trip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from placedemarche.audit.apply import apply_review

    data = tmp_path / "catalog.parquet"
    pq.write_table(pa.table({"id": ["1", "2", "3"], "name": ["pan", "watch", "romper"],
                             "category": ["Kitchen", "Kitchen", "Baby Care"], "price": [3.5, 9.0, 4.0]}), data)
    reviewed = tmp_path / "reviewed.csv"
    write_csv(reviewed, [{"id": "2", "suggested_category": "Watches", "accept": "y"},
                           {"id": "3", "suggested_category": "Kitchen", "accept": "n"}])
    apply_review(data, reviewed, tmp_path / "fixed.parquet")
    table = pq.read_table(tmp_path / "fixed.parquet")
    assert table.column("category").to_pylist() == ["Kitchen", "Watches", "Baby Care"]
    assert table.column("price").to_pylist() == [3.5, 9.0, 4.0]  # other columns keep their type


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[0].update(id="nope"), r"line 2: 1 id\(s\) not in the catalogue \(nope\)"),
    (lambda rows: [r.pop("accept") for r in rows], r"no column 'accept'.*add an 'accept' column"),
    (lambda rows: [r.pop("suggested_category") for r in rows], r"no column 'suggested_category'"),
    (lambda rows: rows[1].update(accept="maybe"), r"line 3: accept is 'maybe': write yes"),
    (lambda rows: rows[0].update(accept="yes", suggested_category=""), r"line 2: product \w+ is accepted but its "
                                                                       r"suggested_category is empty"),
])
def test_apply_errors_are_one_line(audited, tmp_path, edit, message):
    data, out, _ = audited
    rows = _rows(out / "suspects.csv")
    edit(rows)
    reviewed = tmp_path / "reviewed.csv"
    write_csv(reviewed, rows)
    result = CliRunner().invoke(cli, ["audit", "--apply", str(reviewed), "--data", str(data),
                                      "-o", str(tmp_path / "fixed.csv")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "fixed.csv").exists()


def test_apply_never_writes_the_original(audited, tmp_path):
    data, out, _ = audited
    copy = tmp_path / "catalog.csv"
    shutil.copy(data, copy)
    before = _sha(copy)
    runner = CliRunner()
    for extra, message in ((["-o", str(copy)], "is the catalogue itself"),
                           ([], "give its path with --out"),
                           (["-o", str(tmp_path / "fixed.parquet")], "give a .csv file")):
        result = runner.invoke(cli, ["audit", "--apply", str(out / "suspects.csv"), "--data", str(copy), *extra])
        assert result.exit_code == 1
        assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert _sha(copy) == before


def test_find_suspects_ranks_by_label_quality():
    """The suspects are cleanlab's issues, lowest quality first, suggesting another category."""
    from placedemarche.audit.options import AuditOptions
    from placedemarche.audit.suspects import category_health, find_suspects
    from placedemarche.data.catalog import Catalog

    rng = np.random.default_rng(0)
    n, k = 90, 3
    y = np.repeat(np.arange(k), n // k)
    P = np.full((n, k), 0.05)
    P[np.arange(n), y] = 0.9
    P += rng.uniform(0, 0.02, P.shape)
    wrong = [3, 40, 77]
    for i, j in zip(wrong, (1, 2, 0)):
        P[i] = 0.05
        P[i, j] = 0.9 - 0.1 * wrong.index(i)
    P /= P.sum(1, keepdims=True)
    ids = [f"p{i}" for i in range(n)]
    catalog = Catalog(ids=ids, names=ids, descriptions=[""] * n, image_paths=[None] * n,
                      labels=[str(c) for c in y])
    suspects, quality = find_suspects(y, P, ["a", "b", "c"], catalog, AuditOptions())
    assert sorted(s.index for s in suspects) == wrong
    assert [s.quality for s in suspects] == sorted(quality[wrong])
    assert all(s.suggested != s.declared for s in suspects)
    health, overall = category_health(y, P, ["a", "b", "c"])
    assert sum(h["label_issues"] for h in health) == 3
    assert overall == pytest.approx(1 - 3 / n, abs=0.02)


def test_lowest_quality_takes_cleanlabs_calibrated_count():
    """The default rule: the products of lowest label quality, as many as cleanlab's
    calibrated count of issues; a find_label_issues rule is still one option away."""
    import cleanlab.count
    import cleanlab.filter

    from placedemarche.audit.options import AuditOptions
    from placedemarche.audit.suspects import find_suspects
    from placedemarche.data.catalog import Catalog

    rng = np.random.default_rng(1)
    n, k = 120, 3
    y = np.repeat(np.arange(k), n // k)
    P = rng.dirichlet(np.ones(k) * 0.7, size=n)
    P[np.arange(n), y] += rng.uniform(0.0, 1.5, n)  # mostly right, some far from it
    P /= P.sum(1, keepdims=True)
    ids = [f"p{i}" for i in range(n)]
    catalog = Catalog(ids=ids, names=ids, descriptions=[""] * n, image_paths=[None] * n,
                      labels=[str(c) for c in y])
    count = cleanlab.count.num_label_issues(y, P, estimation_method="off_diagonal_calibrated")
    assert count > cleanlab.count.num_label_issues(y, P)  # not cleanlab's plain low_self_confidence
    suspects, quality = find_suspects(y, P, ["a", "b", "c"], catalog, AuditOptions())
    assert len(suspects) == count
    assert {s.index for s in suspects} == set(np.argsort(quality, kind="stable")[:count].tolist())
    assert max(s.quality for s in suspects) <= min(np.delete(quality, [s.index for s in suspects]))
    by_class, _ = find_suspects(y, P, ["a", "b", "c"], catalog, AuditOptions(filter_by="prune_by_class"))
    assert {s.index for s in by_class} == set(np.flatnonzero(
        cleanlab.filter.find_label_issues(y, P, filter_by="prune_by_class")).tolist())


def test_repeats_average_the_out_of_fold_probabilities(tmp_path):
    """--repeats 2: the mean of the out-of-fold probabilities of the k-folds seeded 0 and 1."""
    from placedemarche.audit.options import AuditOptions
    from placedemarche.audit.suspects import out_of_fold_probabilities
    from placedemarche.classify import TrainConfig, train
    from placedemarche.data.catalog import load_catalog

    catalog = load_catalog(_flipped_catalog(tmp_path)).validated(image=False)
    config = TrainConfig(text=TFIDF, folds=3, seed=0)
    runs = [train(catalog, TrainConfig(text=TFIDF, folds=3, seed=s), final_fit=False).oof["text"] for s in (0, 1)]
    assert not np.allclose(runs[0], runs[1])  # other folds, other probabilities
    y, P, group, _ = out_of_fold_probabilities(catalog, config, AuditOptions(repeats=2))
    assert group == "text"
    np.testing.assert_allclose(P, (runs[0] + runs[1]) / 2)
    np.testing.assert_allclose(P.sum(1), 1.0)


def test_options_are_checked():
    from placedemarche.audit.options import AuditOptions
    from placedemarche.core.errors import PlaceDeMarcheError

    with pytest.raises(PlaceDeMarcheError, match="unknown --filter-by 'vibes'"):
        AuditOptions(filter_by="vibes").check()
    with pytest.raises(PlaceDeMarcheError, match="--repeats must be at least 1"):
        AuditOptions(repeats=0).check()


# -- a real browser ------------------------------------------------------------------------


def test_report_in_headless_chromium(chromium, audited, tmp_path):
    from playwright.sync_api import sync_playwright

    _, out, _ = audited
    suspects = _rows(out / "suspects.csv")
    page_text = (out / "report.html").read_text()
    assert "<script>alert(1)</script>" not in page_text  # the markup name is escaped
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(tmp_path / "profile", executable_path=chromium,
                                                        args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 900})
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                       else (problems.append(route.request.url), route.abort()))
            page.add_init_script("window.alert = function () { window.__alerted = true; };")
            page.goto((out / "report.html").as_uri())
            page.wait_for_function("() => document.body.getAttribute('data-drawn') === 'true'", timeout=60_000)
            assert page.eval_on_selector_all("#fig-health .main-svg", "els => els.length") > 0

            visible_ids = ("() => Array.from(document.querySelectorAll('article.card'))"
                           ".filter(c => !c.hidden).map(c => c.querySelector('.rank').textContent.match(/id (\\S+)/)[1])")
            assert page.evaluate(visible_ids) == [r["id"] for r in suspects]
            photos = page.eval_on_selector_all("article.card img.photo", "els => els.map(e => e.src.slice(0, 23))")
            assert photos == ["data:image/jpeg;base64,"] * len(suspects)
            assert EVIL_NAME in page.evaluate("() => document.body.innerText")

            # filter on a declared category: only its suspects stay
            page.select_option("#filter-side", "declared")
            page.select_option("#filter-category", "Kitchen")
            expected = [r["id"] for r in suspects if r["declared_category"] == "Kitchen"]
            assert expected and page.evaluate(visible_ids) == expected
            assert page.text_content("#shown-count") == f"{len(expected)} of {len(suspects)} shown"
            # back to all, sorted by name
            page.select_option("#filter-category", "")
            page.select_option("#sort-by", "name")
            by_name = [r["id"] for r in sorted(suspects, key=lambda r: (r["name"].lower(), int(r["rank"])))]
            assert page.evaluate(visible_ids) == by_name
            # the per-category table sorts when a header is clicked
            page.click("table.sortable th:nth-child(4)")
            rates = page.eval_on_selector_all("table.sortable tbody tr td:nth-child(4)",
                                              "els => els.map(e => parseFloat(e.dataset.value))")
            assert rates == sorted(rates)
            assert page.evaluate("() => window.__alerted === undefined")
            assert problems == []
        finally:
            browser.close()


@pytest.mark.slow
def test_flipkart_flips_found_with_tfidf(flipkart_dir):
    """5 % of the Flipkart sample's categories flipped at random: the audit on TF-IDF alone
    finds most of them (bench/bench_audit.py measures the stronger models)."""
    from dataclasses import replace

    from placedemarche.audit.options import AuditOptions
    from placedemarche.audit.suspects import audit_catalog
    from placedemarche.classify import TrainConfig
    from placedemarche.data.catalog import load_catalog

    catalog = load_catalog(flipkart_dir).validated(image=False)
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(catalog), size=round(0.05 * len(catalog)), replace=False)
    labels = list(catalog.labels)
    for i in flipped:
        others = [c for c in catalog.categories if c != labels[i]]
        labels[i] = others[rng.integers(len(others))]
    result = audit_catalog(replace(catalog, labels=labels), TrainConfig(text="tfidf"), AuditOptions(repeats=1))
    found = {s.index for s in result.suspects}
    hits = len(found & set(flipped.tolist()))
    assert hits / len(found) >= 0.6 and hits / len(flipped) >= 0.6, (hits, len(found), len(flipped))
