"""Sources against a real local HTTP server: pagination, limits, retries, failures, resume."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading

import pytest
from click.testing import CliRunner
from werkzeug import Response

from placedemarche import Source
from placedemarche.cli.main import cli
from placedemarche.data import http
from placedemarche.core.base import SourcePage
from placedemarche.data.catalog import load_catalog
from placedemarche.data.collect import collect, state_path
from placedemarche.core.errors import SourceError
from placedemarche.core.plugins import create_plugin

from helpers import free_port

PAGE_SIZE = 3
TOTAL = 8


@pytest.fixture(autouse=True)
def slept(monkeypatch):
    """Every wait a client asks for (rate limit, backoff, Retry-After), without waiting; the
    clients' clock moves only by the waits, as if they had been slept, so the times the
    messages report are exact however fast the machine is."""
    waits: list[float] = []
    monkeypatch.setattr(http, "default_sleep", waits.append)
    monkeypatch.setattr(http, "default_clock", lambda: sum(waits))
    return waits


def off_product(i: int, base: str) -> dict:
    return {"code": f"{3000 + i}", "product_name": f"Champagne brut n°{i} – cuvée", "brands": "Maison",
            "categories": "Boissons,Vins,Champagnes", "categories_tags": ["en:wines", "en:champagnes"],
            "ingredients_text": f"raisins {i}", "image_url": f"{base}/img/{i}.jpg"}


def off_page(page: int, base: str) -> dict:
    products = [off_product(i, base) for i in range((page - 1) * PAGE_SIZE, min(page * PAGE_SIZE, TOTAL))]
    return {"count": TOTAL, "page": page, "page_size": PAGE_SIZE, "skip": (page - 1) * PAGE_SIZE,
            "products": products}


def serve_off(httpserver, fail=None):
    """Serve the search endpoint; ``fail(page, call)`` may return a Response to send instead."""
    calls: dict[int, int] = {}

    def handler(request):
        page = int(request.args["page"])
        calls[page] = calls.get(page, 0) + 1
        assert request.args["search_terms"] == "champagne" and request.args["json"] == "1"
        assert request.args["page_size"] == str(PAGE_SIZE) and "product_name" in request.args["fields"]
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
                    max_retries=2, timeout=5.0)
    return create_plugin("source", "openfoodfacts", **{**defaults, **params})


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def ids(path):
    return [r["foodId"] for r in read_csv(path)]


ALL_IDS = [str(3000 + i) for i in range(TOTAL)]


def test_pagination_and_study_columns(httpserver, tmp_path):
    calls = serve_off(httpserver)
    summary = collect(off(httpserver), "champagne", tmp_path / "out.csv")
    rows = read_csv(tmp_path / "out.csv")
    assert summary.complete and summary.pages == 3 and summary.products == TOTAL == len(rows)
    assert list(rows[0]) == ["foodId", "label", "category", "foodContentsLabel", "image"]
    assert rows[0]["label"] == "Champagne brut n°0 – cuvée"  # non-ASCII kept intact
    assert rows[1] == {"foodId": "3001", "label": "Champagne brut n°1 – cuvée",
                       "category": "Boissons,Vins,Champagnes", "foodContentsLabel": "raisins 1",
                       "image": httpserver.url_for("/img/1.jpg")}
    assert ids(tmp_path / "out.csv") == ALL_IDS and calls == {1: 1, 2: 1, 3: 1}
    state = json.loads(state_path(tmp_path / "out.csv").read_text())
    assert state["complete"] and state["pages"] == 3 and state["query"] == "champagne"


class Recorder:
    def __init__(self):
        self.tasks = {}

    def start(self, description, total):
        self.tasks[description] = [total, 0]
        return description

    def advance(self, handle, amount):
        self.tasks[handle][1] += amount

    def stop(self, handle):
        pass


def test_progress_counts_pages_and_products(httpserver, tmp_path):
    from placedemarche.core.progress import reporting

    serve_off(httpserver)
    recorder = Recorder()
    with reporting(recorder):
        collect(off(httpserver), "champagne", tmp_path / "out.csv", limit=7)
    assert recorder.tasks == {"openfoodfacts 'champagne': pages": [None, 3],
                              "openfoodfacts: products": [7, 7]}


def test_limit_stops_early_and_jsonl(httpserver, tmp_path):
    calls = serve_off(httpserver)
    summary = collect(off(httpserver), "champagne", tmp_path / "out.jsonl", limit=4,
                      fields=["foodId", "label", "brands"])
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert summary.products == 4 and len(lines) == 4 and calls == {1: 1, 2: 1}  # no third request
    assert lines[0] == {"foodId": "3000", "label": "Champagne brut n°0 – cuvée", "brands": "Maison"}


def test_429_then_success_honours_retry_after(httpserver, tmp_path, slept):
    def fail(page, call):
        if page == 2 and call == 1:
            return Response("slow down", status=429, headers={"Retry-After": "7"})
    calls = serve_off(httpserver, fail)
    source = off(httpserver)
    summary = collect(source, "champagne", tmp_path / "out.csv")
    assert calls[2] == 2 and summary.retries == 1 and summary.products == TOTAL
    assert slept == [7.0] and summary.waited == 7.0  # the server's Retry-After, not the backoff
    assert source.client_.waits == [("retry after HTTP 429", 7.0)]


def test_5xx_retried_with_exponential_backoff(httpserver, tmp_path, slept):
    def fail(page, call):
        if page == 1 and call <= 2:
            return Response("busy", status=503)
    calls = serve_off(httpserver, fail)
    summary = collect(off(httpserver, backoff_factor=0.5), "champagne", tmp_path / "out.csv")
    assert calls[1] == 3 and summary.retries == 2 and summary.products == TOTAL
    assert slept == [0.5, 1.0]  # backoff_factor * 2**(n-1)


def test_rate_limit_spaces_requests(httpserver, tmp_path, slept):
    serve_off(httpserver)
    source = off(httpserver, min_interval=6.0)
    collect(source, "champagne", tmp_path / "out.csv")
    assert [reason for reason, _ in source.client_.waits] == ["rate limit", "rate limit"]
    assert len(slept) == 2 and all(5.0 < s <= 6.0 for s in slept)  # 3 pages: 2 waits of ~6 s


def test_time_budget_stops_a_long_retry_after(httpserver, tmp_path, slept):
    serve_off(httpserver, lambda page, call: Response("later", status=429, headers={"Retry-After": "3600"}))
    with pytest.raises(SourceError, match=r"page 1: waiting 3600 s .* time budget of 60 s.*nothing was written$"):
        collect(off(httpserver, time_budget=60), "champagne", tmp_path / "out.csv")
    assert slept == []


def test_500_on_page_3_keeps_pages_and_resume_completes(httpserver, tmp_path):
    broken = {"on": True}

    def fail(page, call):
        if page == 3 and broken["on"]:
            return Response("oops", status=500)
    calls = serve_off(httpserver, fail)
    out = tmp_path / "out.csv"
    with pytest.raises(SourceError, match=r"page 3: HTTP 500 .*2 page\(s\), 6 product\(s\) kept.*--resume"):
        collect(off(httpserver), "champagne", out)
    assert ids(out) == ALL_IDS[:6] and calls[3] == 3  # tried, retried twice, then gave up
    with pytest.raises(SourceError, match="already exists.*--resume"):
        collect(off(httpserver), "champagne", out)
    broken["on"] = False
    summary = collect(off(httpserver), "champagne", out, resume=True)
    assert summary.resumed_from_page == 3 and summary.complete and summary.products == TOTAL
    assert ids(out) == ALL_IDS and calls[1] == 1  # page 1 was not fetched again


def test_500_then_resume_from_the_cli(httpserver, tmp_path):
    broken = {"on": True}
    serve_off(httpserver, lambda page, call: Response("oops", status=500) if page == 3 and broken["on"] else None)
    out = tmp_path / "out.csv"
    args = ["source", "run", "off", "--q", "champagne", "-o", str(out),  # with progress bars
            "--base-url", httpserver.url_for("/"), "--option", "page_size=3",
            "--option", "max_retries=0", "--option", "min_interval=0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: openfoodfacts page 3: HTTP 500" in result.output and "--resume" in result.output
    broken["on"] = False
    result = CliRunner().invoke(cli, args + ["--resume"])
    assert result.exit_code == 0, result.output
    assert "8 product(s) written" in result.output and "(resumed at page 3)" in result.output
    assert ids(out) == ALL_IDS


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
    assert ids(out) == ALL_IDS


def test_resume_refuses_other_settings_and_nothing_to_resume(httpserver, tmp_path):
    serve_off(httpserver)
    out = tmp_path / "out.csv"
    with pytest.raises(SourceError, match="nothing to resume"):
        collect(off(httpserver), "champagne", out, resume=True)
    collect(off(httpserver), "champagne", out, limit=2)
    with pytest.raises(SourceError, match="other settings"):
        collect(off(httpserver), "prosecco", out, resume=True)
    assert collect(off(httpserver), "champagne", out, resume=True).complete  # already done: no-op
    assert ids(out) == ALL_IDS[:2]


def test_timeout_is_retried_then_reported(httpserver, tmp_path, slept, monkeypatch):
    # The slow handler answers only once the client has given up (it then backs off: its sleep
    # releases the handler), so the timeout happens however slow or loaded the machine is; the
    # client's timeout is long enough for the answers that should arrive in time.
    gave_up = threading.Semaphore(0)

    def sleep(seconds):
        slept.append(seconds)
        gave_up.release()

    def slow(request):
        gave_up.acquire(timeout=60)  # a bound in case the test fails before releasing it
        return Response(json.dumps({"count": 0, "products": []}), content_type="application/json")

    monkeypatch.setattr(http, "default_sleep", sleep)
    httpserver.expect_oneshot_request("/cgi/search.pl").respond_with_handler(slow)
    httpserver.expect_oneshot_request("/cgi/search.pl").respond_with_json(off_page(1, "http://x"))
    source = off(httpserver, timeout=1.5, max_retries=1, page_size=10)
    summary = collect(source, "champagne", tmp_path / "a.csv", limit=2)
    assert summary.products == 2 and summary.retries == 1
    assert source.client_.waits == [("retry after timeout (no answer within 1.5 s)", 2.0)]

    httpserver.clear()
    slept.clear()
    httpserver.expect_request("/cgi/search.pl").respond_with_handler(slow)
    try:
        with pytest.raises(SourceError) as info:
            collect(off(httpserver, timeout=1.5, max_retries=1), "champagne", tmp_path / "b.csv")
    finally:
        gave_up.release()  # the second slow answer: the client gave up without backing off
    assert str(info.value) == ("openfoodfacts page 1: timeout (no answer within 1.5 s) after 1 retry over 2 s; "
                               "nothing was written")


def test_malformed_json_and_empty_results(httpserver, tmp_path):
    httpserver.expect_oneshot_request("/cgi/search.pl").respond_with_data("<html>maintenance</html>")
    with pytest.raises(SourceError, match="page 1: the response is not valid JSON"):
        collect(off(httpserver), "champagne", tmp_path / "a.csv")
    httpserver.expect_oneshot_request("/cgi/search.pl").respond_with_json({"count": 3, "products": "oops"})
    with pytest.raises(SourceError, match="page 1: unexpected response"):
        collect(off(httpserver), "champagne", tmp_path / "b.csv")
    httpserver.expect_oneshot_request("/cgi/search.pl").respond_with_json({"count": 0, "products": []})
    summary = collect(off(httpserver), "champagne", tmp_path / "c.csv")
    assert summary.products == 0 and summary.pages == 1 and summary.complete
    assert (tmp_path / "c.csv").read_text() == "foodId,label,category,foodContentsLabel,image\n"


def test_missing_fields_are_empty(httpserver, tmp_path):
    httpserver.expect_request("/cgi/search.pl").respond_with_json(
        {"count": 2, "products": [{"code": "1", "categories_tags": ["en:champagnes"]},
                                  {"code": "2", "product_name": None, "categories": "Vins"}]})
    collect(off(httpserver), "champagne", tmp_path / "o.csv")
    assert read_csv(tmp_path / "o.csv") == [
        {"foodId": "1", "label": "", "category": "en:champagnes", "foodContentsLabel": "", "image": ""},
        {"foodId": "2", "label": "", "category": "Vins", "foodContentsLabel": "", "image": ""}]


def test_products_repeated_across_pages_are_written_once(httpserver, tmp_path):
    def page(request):
        number = int(request.args["page"])
        codes = {1: ["a", "b", "c"], 2: ["c", "d", "a"], 3: ["e"]}[number]
        return Response(json.dumps({"count": 7, "page_size": 3,
                                    "products": [{"code": c, "product_name": c.upper()} for c in codes]}),
                        content_type="application/json")
    httpserver.expect_request("/cgi/search.pl").respond_with_handler(page)
    summary = collect(off(httpserver), "champagne", tmp_path / "o.csv")
    assert ids(tmp_path / "o.csv") == ["a", "b", "c", "d", "e"] and summary.duplicates == 2
    assert len(load_catalog(tmp_path / "o.csv")) == 5  # unique ids: a valid catalogue


def test_unknown_field_fails_before_any_request(httpserver, tmp_path):
    with pytest.raises(SourceError, match="openfoodfacts has no field 'colour'.*brands"):
        collect(off(httpserver), "champagne", tmp_path / "o.csv", fields=["foodId", "colour"])
    assert httpserver.log == [] and not (tmp_path / "o.csv").exists()


def _jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 180, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_images_downloaded_failures_skipped_and_catalogue_loads(httpserver, tmp_path):
    serve_off(httpserver)
    for i in range(TOTAL):
        if i == 5:
            httpserver.expect_request(f"/img/{i}.jpg").respond_with_data("gone", status=404)
        elif i == 6:  # a 200 that is not an image (a CDN error page)
            httpserver.expect_request(f"/img/{i}.jpg").respond_with_data("<html>", content_type="text/html")
        else:
            httpserver.expect_request(f"/img/{i}.jpg").respond_with_data(_jpeg(), content_type="image/jpeg")
    out = tmp_path / "cat" / "champagne.csv"
    result = CliRunner().invoke(cli, ["source", "run", "openfoodfacts", "--q", "champagne", "-o", str(out),
                                      "--images", str(tmp_path / "cat" / "images"), "--no-progress",
                                      "--base-url", httpserver.url_for("/"), "--option", "page_size=3",
                                      "--option", "min_interval=0"])
    assert result.exit_code == 0, result.output
    assert "8 product(s) written" in result.output and "6 image(s), 2 image(s) skipped" in result.output
    assert "skipped image 3005: HTTP 404" in result.output
    assert "skipped image 3006: image file cannot be decoded" in result.output
    rows = read_csv(out)
    assert list(rows[0]) == ["foodId", "label", "category", "foodContentsLabel", "image", "image_url"]
    assert rows[0]["image"] == "images/3000.jpg" and rows[0]["image_url"].endswith("/img/0.jpg")
    assert rows[5]["image"] == "" and rows[5]["image_url"].endswith("/img/5.jpg")
    assert sorted(p.name for p in (tmp_path / "cat" / "images").iterdir()) == [
        f"{3000 + i}.jpg" for i in (0, 1, 2, 3, 4, 7)]  # no .part file left behind
    for catalog in (load_catalog(out), load_catalog(out, image_dir=tmp_path / "cat" / "images")):
        assert catalog.ids[0] == "3000" and catalog.labels[0] == "Boissons,Vins,Champagnes"
        assert catalog.names[0] == "Champagne brut n°0 – cuvée"
        assert catalog.image_paths[0] == tmp_path / "cat" / "images" / "3000.jpg"
        assert len(catalog.validated(image=True)) == TOTAL - 2


class _Flaky(Source):
    """A source without HTTP that is interrupted (Ctrl-C) on page 2 the first time."""

    name = "flaky"
    columns = {"foodId": "id", "label": "name"}
    interrupted = False

    def pages(self, query, start_page=1):
        for number in range(start_page, 4):
            if number == 2 and not _Flaky.interrupted:
                _Flaky.interrupted = True
                raise KeyboardInterrupt
            yield SourcePage(number, [{"id": f"{number}-{i}", "name": "é"} for i in range(2)], 6, number == 3)


def test_interruption_keeps_pages_and_resumes(tmp_path):
    out = tmp_path / "o.csv"
    with pytest.raises(SourceError, match=r"interrupted; 1 page\(s\), 2 product\(s\) kept .*--resume"):
        collect(_Flaky(), "q", out)
    assert ids(out) == ["1-0", "1-1"]
    summary = collect(_Flaky(), "q", out, resume=True)
    assert summary.resumed_from_page == 2 and summary.products == 6
    assert ids(out) == ["1-0", "1-1", "2-0", "2-1", "3-0", "3-1"]


def test_edamam_credentials_and_pages(httpserver, tmp_path, monkeypatch):
    monkeypatch.delenv("EDAMAM_APP_ID", raising=False)
    monkeypatch.delenv("EDAMAM_APP_KEY", raising=False)
    result = CliRunner().invoke(cli, ["source", "run", "edamam", "--q", "champagne", "-o", str(tmp_path / "e.csv")])
    assert result.exit_code == 1 and "edamam needs credentials: set EDAMAM_APP_ID" in result.output
    assert not (tmp_path / "e.csv").exists() and httpserver.log == []

    next_url = httpserver.url_for("/next")
    httpserver.expect_request("/api/food-database/v2/parser").respond_with_json({
        "text": "champagne", "parsed": [],
        "hints": [{"food": {"foodId": "food_a", "label": "Champagne", "category": "Generic foods",
                            "foodContentsLabel": "", "image": "http://x/a.jpg"}}],
        "_links": {"next": {"title": "Next page", "href": next_url}}})
    httpserver.expect_request("/next").respond_with_json({
        "hints": [{"food": {"foodId": "food_b", "label": "Vinaigrette au champagne",
                            "category": "Packaged foods", "foodContentsLabel": "vinaigre; champagne"}}]})
    monkeypatch.setenv("EDAMAM_APP_ID", "id")
    monkeypatch.setenv("EDAMAM_APP_KEY", "key")
    result = CliRunner().invoke(cli, ["source", "run", "edamam", "--q", "champagne", "--limit", "10",
                                      "-o", str(tmp_path / "e.csv"), "--no-progress",
                                      "--base-url", httpserver.url_for("/").rstrip("/")])
    assert result.exit_code == 0, result.output
    assert "2 product(s) written" in result.output and "2 page(s)" in result.output
    assert read_csv(tmp_path / "e.csv") == [
        {"foodId": "food_a", "label": "Champagne", "category": "Generic foods", "foodContentsLabel": "",
         "image": "http://x/a.jpg"},
        {"foodId": "food_b", "label": "Vinaigrette au champagne", "category": "Packaged foods",
         "foodContentsLabel": "vinaigre; champagne", "image": ""}]
    first = httpserver.log[0][0].args
    assert (first["app_id"], first["app_key"], first["ingr"]) == ("id", "key", "champagne")


def test_edamam_refused_credentials(httpserver, tmp_path):
    httpserver.expect_request("/api/food-database/v2/parser").respond_with_data("", status=401)
    source = create_plugin("source", "edamam", app_id="id", app_key="bad", base_url=httpserver.url_for("/"))
    with pytest.raises(SourceError, match="edamam page 1: HTTP 401 .* check the credentials"):
        collect(source, "champagne", tmp_path / "e.csv")


def test_cli_list_and_run_with_user_agent(httpserver, tmp_path):
    serve_off(httpserver)
    runner = CliRunner()
    listing = runner.invoke(cli, ["source", "list"]).output
    assert "openfoodfacts" in listing and "edamam" in listing
    result = runner.invoke(cli, ["source", "run", "openfoodfacts", "--q", "champagne", "--limit", "5",
                                 "-o", str(tmp_path / "c.jsonl"), "--base-url", httpserver.url_for("/"),
                                 "--user-agent", "placedemarche/test (qa@example.org)",
                                 "--fields", "foodId,brands", "--option", "page_size=3",
                                 "--option", "min_interval=0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "5 product(s) written" in result.output and "2 page(s), 0 retries" in result.output
    assert httpserver.log[0][0].headers["User-Agent"] == "placedemarche/test (qa@example.org)"
    assert json.loads((tmp_path / "c.jsonl").read_text().splitlines()[4]) == {"foodId": "3004", "brands": "Maison"}


# -- failures retrying cannot fix, and the ones it can ---------------------------------------
def assert_nothing_left(out):
    assert not out.exists() and not state_path(out).exists()


def test_refused_connection_fails_at_once_and_leaves_nothing(tmp_path, slept):
    port = free_port()
    source = create_plugin("source", "openfoodfacts", base_url=f"http://127.0.0.1:{port}", min_interval=0)
    out = tmp_path / "out.csv"
    with pytest.raises(SourceError) as info:
        collect(source, "champagne", out)  # default max_retries=5: none must be spent
    message = str(info.value)
    assert message.startswith(f"openfoodfacts page 1: connection refused by 127.0.0.1:{port}")
    assert "--resume" not in message and "kept" not in message and "\n" not in message
    assert "NewConnectionError" not in message and "Errno" not in message
    assert slept == [] and source.retries() == 0
    assert_nothing_left(out)


def test_name_resolution_failure_fails_at_once_from_the_cli(tmp_path, slept, offline):
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(cli, ["source", "run", "off", "--q", "champagne", "-o", str(out),
                                      "--base-url", "https://offline.invalid", "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output  # no retry was announced: none was made
    assert lines[0].rstrip() == ("error: openfoodfacts page 1: cannot resolve host offline.invalid: "
                                 "check your network connection or --base-url; nothing was written")
    assert "--resume" not in result.output and slept == []
    assert_nothing_left(out)


def test_invalid_url_fails_at_once(tmp_path, slept):
    source = create_plugin("source", "openfoodfacts", base_url="world.openfoodfacts.org", min_interval=0)
    with pytest.raises(SourceError, match=r"^openfoodfacts page 1: invalid URL world\.openfoodfacts\.org/cgi/"
                                          r"search\.pl: .*--base-url") as info:
        collect(source, "champagne", tmp_path / "out.csv")
    assert "--resume" not in str(info.value) and slept == []
    assert_nothing_left(tmp_path / "out.csv")


@pytest.fixture
def https_server(tmp_path):
    """An HTTPS server whose self-signed certificate no client trusts."""
    from pytest_httpserver import HTTPServer

    if shutil.which("openssl") is None:
        pytest.skip("openssl not found: cannot make a self-signed certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = HTTPServer(host="localhost", ssl_context=context)
    server.start()
    yield server
    server.clear()
    server.stop()


def test_ssl_certificate_error_fails_at_once(https_server, tmp_path, slept):
    https_server.expect_request("/cgi/search.pl").respond_with_json(off_page(1, "https://x"))
    source = create_plugin("source", "openfoodfacts", base_url=https_server.url_for("/"), min_interval=0)
    with pytest.raises(SourceError, match=r"^openfoodfacts page 1: SSL certificate verification failed "
                                          r"for localhost:\d+") as info:
        collect(source, "champagne", tmp_path / "out.csv")
    assert "--resume" not in str(info.value) and slept == [] and source.retries() == 0


def test_nothing_kept_after_retries_says_so_and_leaves_nothing(httpserver, tmp_path, slept):
    serve_off(httpserver, lambda page, call: Response("busy", status=503))
    out = tmp_path / "out.csv"
    with pytest.raises(SourceError, match=r"page 1: HTTP 503 .*nothing was written") as info:
        collect(off(httpserver), "champagne", out)
    assert "--resume" not in str(info.value) and len(slept) == 2
    assert_nothing_left(out)


def test_retries_are_reported_as_they_happen(httpserver, tmp_path):
    serve_off(httpserver, lambda page, call: Response("busy", status=503) if page == 2 and call <= 2 else None)
    notices = []
    summary = collect(off(httpserver, backoff_factor=0.5), "champagne", tmp_path / "out.csv",
                      on_retry=notices.append)
    assert summary.complete and summary.retries == 2
    assert [str(n) for n in notices] == ["openfoodfacts page 2: retry 1/2 in 0.5 s: HTTP 503",
                                         "openfoodfacts page 2: retry 2/2 in 1 s: HTTP 503"]
    assert (notices[0].attempt, notices[0].max_retries, notices[0].seconds) == (1, 2, 0.5)


def test_retries_are_shown_by_the_cli(httpserver, tmp_path):
    serve_off(httpserver, lambda page, call: Response("busy", status=503) if page == 1 and call == 1 else None)
    result = CliRunner().invoke(cli, ["source", "run", "off", "--q", "champagne", "-o", str(tmp_path / "o.csv"),
                                      "--base-url", httpserver.url_for("/"), "--option", "page_size=3",
                                      "--option", "min_interval=0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "openfoodfacts page 1: retry 1/5 in 2 s: HTTP 503" in result.output
    assert "8 product(s) written" in result.output and "1 retry" in result.output


def test_http_error_after_retries_says_how_many_and_how_long(httpserver, tmp_path, slept):
    serve_off(httpserver, lambda page, call: Response("slow down", status=429))
    source = off(httpserver, max_retries=5, backoff_factor=2.0)
    with pytest.raises(SourceError) as info:
        collect(source, "champagne", tmp_path / "out.csv")
    assert str(info.value).startswith(
        f"openfoodfacts page 1: HTTP 429 from {httpserver.url_for('/cgi/search.pl')} "
        "after 5 retries over 62 s")
    assert slept == [2.0, 4.0, 8.0, 16.0, 32.0] and source.retries() == 5


class RawServer:
    """A TCP server on 127.0.0.1 answering each connection with the next scripted behaviour:
    "reset" (an RST before any answer) or bytes to send before closing."""

    def __init__(self, script):
        self.script = list(script)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        for behaviour in self.script:
            conn, _ = self.sock.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                if behaviour == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                else:
                    conn.sendall(behaviour)

    def close(self):
        self.sock.close()


def http_json(payload, *, announce=None) -> bytes:
    body = json.dumps(payload).encode()
    length = len(body) if announce is None else announce
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {length}\r\n\r\n".encode() + body)


def test_connection_reset_is_retried(tmp_path, slept):
    page = {"count": 1, "products": [{"code": "1", "product_name": "Brut"}]}
    server = RawServer(["reset", http_json(page)])
    try:
        source = create_plugin("source", "openfoodfacts", base_url=server.url, min_interval=0, backoff_factor=0.5)
        summary = collect(source, "champagne", tmp_path / "out.csv")
    finally:
        server.close()
    assert summary.products == 1 and summary.retries == 1 and slept == [0.5]
    assert source.client_.waits == [("retry after connection reset by the server", 0.5)]


def test_connection_closed_mid_body_is_retried_and_reported_cleanly(tmp_path, slept):
    page = {"count": 1, "products": [{"code": "1", "product_name": "Brut"}]}
    cut = http_json(page, announce=1000)  # announces 1000 bytes, sends fewer, closes
    server = RawServer([cut, http_json(page)])
    try:
        source = create_plugin("source", "openfoodfacts", base_url=server.url, min_interval=0, backoff_factor=0.5)
        summary = collect(source, "champagne", tmp_path / "a.csv")
    finally:
        server.close()
    sent = len(json.dumps(page))
    assert summary.products == 1 and summary.retries == 1 and slept == [0.5]
    assert source.client_.waits == [
        (f"retry after connection closed mid-response ({sent} of 1000 bytes received)", 0.5)]

    slept.clear()
    server = RawServer([cut] * 3)
    try:
        source = create_plugin("source", "openfoodfacts", base_url=server.url, min_interval=0,
                               max_retries=2, backoff_factor=0.5)
        with pytest.raises(SourceError) as info:
            collect(source, "champagne", tmp_path / "b.csv")
    finally:
        server.close()
    assert re.match(rf"openfoodfacts page 1: connection closed mid-response \({sent} of 1000 bytes "
                    r"received\) after 2 retries over 1\.5 s; nothing was written$", str(info.value))
    assert "IncompleteRead" not in str(info.value) and slept == [0.5, 1.0]


def _bomb_png() -> bytes:
    """A black 1-bit PNG of about 100 kB whose pixel count passes twice Pillow's limit, so
    opening it raises DecompressionBombError (not the milder warning)."""
    from PIL import Image

    side = int((Image.MAX_IMAGE_PIXELS * 2) ** 0.5) + 100
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_decompression_bomb_image_is_skipped_and_the_row_kept(httpserver, tmp_path):
    serve_off(httpserver)
    for i in range(TOTAL):
        data = _bomb_png() if i == 4 else _jpeg()
        httpserver.expect_request(f"/img/{i}.jpg").respond_with_data(data, content_type="image/jpeg")
    out = tmp_path / "cat" / "champagne.csv"
    summary = collect(off(httpserver), "champagne", out, images_dir=tmp_path / "cat" / "images")
    assert summary.complete and summary.products == TOTAL and summary.images == TOTAL - 1
    assert len(summary.skipped_images) == 1
    assert summary.skipped_images[0].startswith("3004: image too large (")
    assert summary.skipped_images[0].endswith(f" ({httpserver.url_for('/img/4.jpg')})")
    rows = read_csv(out)
    assert rows[4]["foodId"] == "3004" and rows[4]["image"] == "" and rows[4]["image_url"].endswith("/img/4.jpg")
    assert not (tmp_path / "cat" / "images" / "3004.jpg").exists()
    assert len(load_catalog(out).validated(image=True)) == TOTAL - 1


def test_output_and_state_honour_the_umask(httpserver, tmp_path):
    serve_off(httpserver, lambda page, call: Response("oops", status=500) if page == 2 and call == 1 else None)
    out = tmp_path / "out.csv"
    previous = os.umask(0o022)
    try:
        with pytest.raises(SourceError):
            collect(off(httpserver, max_retries=0), "champagne", out)
        assert oct(out.stat().st_mode & 0o777) == oct(state_path(out).stat().st_mode & 0o777) == "0o644"
        collect(off(httpserver, max_retries=0), "champagne", out, resume=True)
        os.umask(0o027)
        other = tmp_path / "other.jsonl"
        collect(off(httpserver), "champagne", other, fields=["foodId"])
    finally:
        os.umask(previous)
    assert oct(out.stat().st_mode & 0o777) == oct(state_path(out).stat().st_mode & 0o777) == "0o644"
    assert oct(other.stat().st_mode & 0o777) == oct(state_path(other).stat().st_mode & 0o777) == "0o640"
