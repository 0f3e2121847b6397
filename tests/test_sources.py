"""Sources against a real local HTTP server: pagination, limits, retries, failures, resume."""

from __future__ import annotations

import csv
import json
import time

import pytest
from click.testing import CliRunner
from werkzeug import Response

from placedemarche.cli.main import cli
from placedemarche.core.catalog import load_catalog
from placedemarche.core.collect import collect
from placedemarche.core.errors import SourceError
from placedemarche.core.http import RateLimitedClient
from placedemarche.core.plugins import create_plugin

PAGE_SIZE = 3
TOTAL = 8


def off_product(i: int) -> dict:
    return {"code": f"{3000 + i}", "product_name": f"Champagne brut n°{i} – cuvée", "brands": "Maison",
            "categories": "Boissons,Vins,Champagnes", "categories_tags": ["en:wines", "en:champagnes"],
            "ingredients_text": f"raisins {i}", "image_url": f"IMAGE/{i}.jpg"}


def off_page(page: int, base: str) -> dict:
    products = [off_product(i) for i in range((page - 1) * PAGE_SIZE, min(page * PAGE_SIZE, TOTAL))]
    for p in products:
        p["image_url"] = p["image_url"].replace("IMAGE", base + "/img")
    return {"count": TOTAL, "page": page, "page_size": PAGE_SIZE, "products": products}


def serve_off(httpserver, fail=None):
    """Serve the search endpoint; ``fail(page, calls)`` may return a Response to send instead."""
    calls: dict[int, int] = {}

    def handler(request):
        page = int(request.args["page"])
        calls[page] = calls.get(page, 0) + 1
        assert request.args["search_terms"] == "champagne" and request.args["json"] == "1"
        assert request.headers["User-Agent"].startswith("placedemarche/")
        if fail is not None:
            response = fail(page, calls[page])
            if response is not None:
                return response
        return Response(json.dumps(off_page(page, httpserver.url_for("").rstrip("/"))),
                        content_type="application/json")

    httpserver.expect_request("/cgi/search.pl").respond_with_handler(handler)
    return calls


def off(httpserver, **params):
    defaults = dict(base_url=httpserver.url_for("/"), page_size=PAGE_SIZE, min_interval=0.0,
                    backoff_factor=0.0, max_retries=2, timeout=5.0)
    return create_plugin("source", "openfoodfacts", **{**defaults, **params})


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_pagination_and_study_columns(httpserver, tmp_path):
    calls = serve_off(httpserver)
    summary = collect(off(httpserver), "champagne", tmp_path / "out.csv")
    rows = read_csv(tmp_path / "out.csv")
    assert summary.complete and summary.pages == 3 and summary.products == TOTAL == len(rows)
    assert list(rows[0]) == ["foodId", "label", "category", "foodContentsLabel", "image"]
    assert rows[0]["label"] == "Champagne brut n°0 – cuvée"  # non-ASCII kept intact
    assert rows[7]["foodId"] == "3007" and calls == {1: 1, 2: 1, 3: 1}


def test_limit_stops_early_and_jsonl(httpserver, tmp_path):
    calls = serve_off(httpserver)
    summary = collect(off(httpserver), "champagne", tmp_path / "out.jsonl", limit=4,
                      fields=["foodId", "label", "brands"])
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert summary.products == 4 and len(lines) == 4 and set(calls) == {1, 2}
    assert lines[0] == {"foodId": "3000", "label": "Champagne brut n°0 – cuvée", "brands": "Maison"}


def test_429_then_success_is_retried_with_retry_after(httpserver, tmp_path):
    def fail(page, call):
        if page == 2 and call == 1:
            return Response("slow down", status=429, headers={"Retry-After": "1"})
    calls = serve_off(httpserver, fail)
    started = time.monotonic()
    summary = collect(off(httpserver), "champagne", tmp_path / "out.csv")
    assert calls[2] == 2 and summary.retries == 1 and summary.products == TOTAL
    assert time.monotonic() - started >= 0.9  # the server's Retry-After was waited for


def test_500_on_page_3_keeps_pages_and_resume_completes(httpserver, tmp_path):
    broken = {"on": True}

    def fail(page, call):
        if page == 3 and broken["on"]:
            return Response("oops", status=500)
    serve_off(httpserver, fail)
    out = tmp_path / "out.csv"
    with pytest.raises(SourceError, match=r"page 3: HTTP 500 .*2 page\(s\), 6 product\(s\) kept.*--resume"):
        collect(off(httpserver), "champagne", out)
    assert len(read_csv(out)) == 6
    with pytest.raises(SourceError, match="already exists"):
        collect(off(httpserver), "champagne", out)
    broken["on"] = False
    summary = collect(off(httpserver), "champagne", out, resume=True)
    rows = read_csv(out)
    assert summary.resumed_from_page == 3 and summary.complete
    assert [r["foodId"] for r in rows] == [str(3000 + i) for i in range(TOTAL)]


def test_resume_drops_a_half_written_page(httpserver, tmp_path):
    serve_off(httpserver, lambda page, call: Response("x", status=503) if page == 2 else None)
    out = tmp_path / "out.csv"
    with pytest.raises(SourceError):
        collect(off(httpserver), "champagne", out)
    with open(out, "a", encoding="utf-8") as handle:
        handle.write("3003,partial row cut by a cra")  # as if killed mid-write
    httpserver.clear()
    serve_off(httpserver)
    collect(off(httpserver), "champagne", out, resume=True)
    assert [r["foodId"] for r in read_csv(out)] == [str(3000 + i) for i in range(TOTAL)]


def test_resume_refuses_other_settings(httpserver, tmp_path):
    serve_off(httpserver)
    out = tmp_path / "out.csv"
    collect(off(httpserver), "champagne", out, limit=2)
    with pytest.raises(SourceError, match="other settings"):
        collect(off(httpserver), "prosecco", out, resume=True)


def test_timeout(httpserver, tmp_path):
    def slow(request):
        time.sleep(1.0)
        return Response("{}", content_type="application/json")
    httpserver.expect_request("/cgi/search.pl").respond_with_handler(slow)
    with pytest.raises(SourceError, match="timed out after 0.3 s|gave up after retries"):
        collect(off(httpserver, timeout=0.3, max_retries=0), "champagne", tmp_path / "o.csv")


def test_malformed_json_and_empty_results(httpserver, tmp_path):
    httpserver.expect_oneshot_request("/cgi/search.pl").respond_with_data("<html>maintenance</html>")
    with pytest.raises(SourceError, match="page 1: the response is not valid JSON"):
        collect(off(httpserver), "champagne", tmp_path / "a.csv")
    httpserver.expect_oneshot_request("/cgi/search.pl").respond_with_json({"count": 0, "products": []})
    summary = collect(off(httpserver), "champagne", tmp_path / "b.csv")
    assert summary.products == 0 and summary.complete
    assert read_csv(tmp_path / "b.csv") == []


def test_missing_fields_are_empty(httpserver, tmp_path):
    httpserver.expect_request("/cgi/search.pl").respond_with_json(
        {"count": 1, "products": [{"code": "1", "categories_tags": ["en:champagnes"]}]})
    collect(off(httpserver), "champagne", tmp_path / "o.csv")
    row = read_csv(tmp_path / "o.csv")[0]
    assert row == {"foodId": "1", "label": "", "category": "en:champagnes", "foodContentsLabel": "", "image": ""}


def test_images_downloaded_failures_skipped_and_catalogue_loads(httpserver, tmp_path):
    import cv2
    import numpy as np

    serve_off(httpserver)
    ok, png = cv2.imencode(".jpg", np.full((8, 8, 3), 200, np.uint8))
    for i in range(TOTAL):
        if i == 5:
            httpserver.expect_request(f"/img/{i}.jpg").respond_with_data("gone", status=404)
        else:
            httpserver.expect_request(f"/img/{i}.jpg").respond_with_data(png.tobytes(), content_type="image/jpeg")
    out = tmp_path / "cat" / "champagne.csv"
    summary = collect(off(httpserver), "champagne", out, images_dir=tmp_path / "cat" / "images")
    assert summary.images == TOTAL - 1 and len(summary.skipped_images) == 1
    assert summary.skipped_images[0].startswith("3005: ")
    rows = read_csv(out)
    assert rows[0]["image"] == "images/3000.jpg" and rows[0]["image_url"].endswith("/img/0.jpg")
    catalog = load_catalog(out)
    assert catalog.ids[0] == "3000" and catalog.labels[0] == "Boissons,Vins,Champagnes"
    assert len(catalog.validated(image=True)) == TOTAL - 1


def test_rate_limit_waits_between_requests():
    waits = []
    now = {"t": 0.0}
    client = RateLimitedClient(user_agent="t", min_interval=6.0, sleep=waits.append, clock=lambda: now["t"])
    client.last_request = 0.0
    now["t"] = 1.5
    with pytest.raises(SourceError):  # nothing listens on port 9: fails after the wait
        client.session.mount("http://", __import__("requests").adapters.HTTPAdapter(max_retries=0))
        client.get_json("http://127.0.0.1:9/x", {}, what="t")
    assert waits == [4.5]


def test_edamam_credentials_and_pages(httpserver, tmp_path, monkeypatch):
    monkeypatch.delenv("EDAMAM_APP_ID", raising=False)
    monkeypatch.delenv("EDAMAM_APP_KEY", raising=False)
    result = CliRunner().invoke(cli, ["source", "run", "edamam", "--q", "champagne", "-o", str(tmp_path / "e.csv")])
    assert result.exit_code == 1 and "edamam needs credentials: set EDAMAM_APP_ID" in result.output
    assert not (tmp_path / "e.csv").exists()

    next_url = httpserver.url_for("/next")
    httpserver.expect_request("/api/food-database/v2/parser").respond_with_json({
        "hints": [{"food": {"foodId": "food_a", "label": "Champagne", "category": "Generic foods",
                            "foodContentsLabel": "", "image": "http://x/a.jpg"}}],
        "_links": {"next": {"href": next_url}}})
    httpserver.expect_request("/next").respond_with_json({
        "hints": [{"food": {"foodId": "food_b", "label": "Champagne vinaigrette", "category": "Packaged foods"}}]})
    monkeypatch.setenv("EDAMAM_APP_ID", "id")
    monkeypatch.setenv("EDAMAM_APP_KEY", "key")
    result = CliRunner().invoke(cli, ["source", "run", "edamam", "--q", "champagne", "--limit", "10",
                                      "-o", str(tmp_path / "e.csv"), "--no-progress",
                                      "--base-url", httpserver.url_for("/").rstrip("/")])
    assert result.exit_code == 0, result.output
    assert "2 product(s) written" in result.output and "2 page(s)" in result.output
    rows = read_csv(tmp_path / "e.csv")
    assert [r["foodId"] for r in rows] == ["food_a", "food_b"] and rows[1]["image"] == ""
    assert httpserver.log[0][0].args["app_id"] == "id"


def test_cli_run_and_list(httpserver, tmp_path):
    serve_off(httpserver)
    runner = CliRunner()
    assert "openfoodfacts" in runner.invoke(cli, ["source", "list"]).output
    result = runner.invoke(cli, ["source", "run", "openfoodfacts", "--q", "champagne", "--limit", "5",
                                 "-o", str(tmp_path / "c.csv"), "--base-url", httpserver.url_for("/"),
                                 "--option", "page_size=3", "--option", "min_interval=0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "5 product(s) written" in result.output and "2 page(s), 0 retries" in result.output
