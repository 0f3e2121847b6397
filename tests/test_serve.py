"""pm serve's app in process (FastAPI's TestClient): answers, decisions, batches, model info,
bad input, access key, hot reload, metrics, feedback and dynamic batching, on tiny models
trained in fixtures (tfidf text only; tfidf + the mean-colour test extractor)."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from helpers import MeanColourPlugin, make_catalog  # noqa: E402
from placedemarche.classify import ModelError, TrainConfig, load_model, train  # noqa: E402
from placedemarche.classify.threshold import threshold_for  # noqa: E402
from placedemarche.core import plugins  # noqa: E402
from placedemarche.data.catalog import load_catalog  # noqa: E402
from placedemarche.serve import Categoriser, ServeSettings, create_app  # noqa: E402
from placedemarche.serve.batching import DynamicBatcher  # noqa: E402


def _rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny catalogue, a tfidf model on its text and a tfidf + mean-colour model."""
    root = tmp_path_factory.mktemp("serve")
    csv_path = make_catalog(root / "tiny", per_category=8)
    catalog = load_catalog(csv_path).validated()
    train(catalog, TrainConfig(text="tfidf:min_df=1", folds=3), out=root / "text")
    name = plugins.register_plugin(MeanColourPlugin, name="mean-colour-serve", provider="tests")
    try:
        train(catalog, TrainConfig(text="tfidf:min_df=1", image="mean-colour", folds=3), out=root / "both")
    finally:
        plugins.unregister_plugin(name)
    return {"root": root, "csv": csv_path, "rows": _rows(csv_path), "text": root / "text", "both": root / "both"}


def client(model_dir, **settings) -> TestClient:
    return TestClient(create_app(ServeSettings(model_dir=str(model_dir), **settings)))


def objects_file(model_dir: Path) -> Path:
    """The model's objects file (model.skops or model.joblib), as model.json names it."""
    meta = json.loads((model_dir / "model.json").read_text())
    return model_dir / (meta["files"].get("objects") or "model.joblib")


def photo_of(tiny, row) -> bytes:
    return (tiny["csv"].parent / "images" / row["image"]).read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- answers ---------------------------------------------------------------------------------
def test_categorise_answers_the_category_its_probability_top_k_and_decision(tiny):
    model = load_model(tiny["text"])
    row = tiny["rows"][0]
    with client(tiny["text"]) as c:
        answer = c.post("/v1/categorise", json={"id": row["uniq_id"], "name": row["product_name"],
                                                "description": row["description"]}).json()
        info = c.get("/v1/model").json()
    proba = model.predict_proba([f"{row['product_name']}. {row['description']}"])[0]
    assert answer["id"] == row["uniq_id"]
    assert answer["category"] == model.categories[int(np.argmax(proba))] == row["category"]
    assert answer["probability"] == pytest.approx(proba.max(), abs=1e-5)
    assert [t["category"] for t in answer["top"]] == [model.categories[j] for j in np.argsort(-proba)[:3]]
    assert answer["modality"] == "text" and answer["model_id"] == info["model_id"]
    threshold = model.metrics["decision"]["threshold"]
    assert answer["threshold"] == pytest.approx(threshold)
    assert answer["decision"] == ("auto" if answer["probability"] >= threshold else "review")
    assert answer["seconds"] > 0


def test_multipart_and_json_give_the_same_answer_and_missing_modalities_are_said(tiny):
    row = tiny["rows"][9]
    photo = photo_of(tiny, row)
    with client(tiny["both"]) as c:
        form = c.post("/v1/categorise", data={"id": "a", "name": row["product_name"],
                                               "description": row["description"]},
                      files={"photo": ("p.jpg", photo, "image/jpeg")}).json()
        as_json = c.post("/v1/categorise", json={"id": "a", "name": row["product_name"],
                                                 "description": row["description"], "photo": b64(photo)}).json()
        text_only = c.post("/v1/categorise", json={"name": row["product_name"]}).json()
        photo_only = c.post("/v1/categorise", files={"photo": ("p.jpg", photo, "image/jpeg")}).json()
    for key in ("category", "probability", "top", "modality", "decision"):
        assert form[key] == as_json[key]
    assert form["modality"] == "text+image" and form["category"] == row["category"] and form["notes"] == []
    assert text_only["modality"] == "text" and text_only["notes"] == ["no photo: answered from the text"]
    assert photo_only["modality"] == "image" and photo_only["notes"] == ["no text: answered from the photo"]


def test_batch_answers_json_arrays_and_json_lines_in_order(tiny):
    rows = tiny["rows"][::4]
    products = [{"id": r["uniq_id"], "name": r["product_name"], "description": r["description"]} for r in rows]
    with client(tiny["text"], batch_limit=len(rows)) as c:
        array = c.post("/v1/categorise/batch", json=products)
        lines = c.post("/v1/categorise/batch", content="\n".join(json.dumps(p) for p in products) + "\n",
                       headers={"Content-Type": "application/x-ndjson"})
        single = [c.post("/v1/categorise", json=p).json() for p in products]
        over = c.post("/v1/categorise/batch", json=products + products[:1])
        empty = c.post("/v1/categorise/batch", json=[])
        bad_line = c.post("/v1/categorise/batch", content='{"name": "x"}\n{"name": 5}\n',
                          headers={"Content-Type": "application/x-ndjson"})
    assert array.status_code == lines.status_code == 200
    for answers in (array.json()["answers"], lines.json()["answers"]):
        assert [a["id"] for a in answers] == [r["uniq_id"] for r in rows]
        assert [a["category"] for a in answers] == [r["category"] for r in rows]
        assert [a["probability"] for a in answers] == pytest.approx([s["probability"] for s in single], abs=1e-6)
    assert over.status_code == 413 and f"at most {len(rows)}" in over.json()["detail"]
    assert empty.status_code == 422
    assert bad_line.status_code == 422 and bad_line.json()["detail"][0]["loc"] == ["body", 1, "name"]


def test_model_info_says_what_the_model_is(tiny):
    meta = json.loads((tiny["both"] / "model.json").read_text())
    with client(tiny["both"]) as c:
        info = c.get("/v1/model").json()
    assert info["categories"] == meta["categories"]
    assert info["checksum"] == meta["sha256"][objects_file(tiny["both"]).name] and info["model_id"].endswith(info["checksum"][:12])
    assert set(info["extractors"]) == set(meta["extractors"]) and info["head"] == "logreg"
    assert info["modalities"] == ["text", "image"] and info["trained"] == meta["created"]
    assert info["cv_accuracy"] == pytest.approx(meta["metrics"]["results"][info["group"]]["accuracy_mean"])
    stored = meta["metrics"]["decision"]
    assert info["decision"]["threshold"] == pytest.approx(stored["threshold"])
    assert info["decision"]["thresholds"] == pytest.approx(
        {g: p["threshold"] for g, p in stored["by_group"].items()})
    assert "precision" in info["decision"]["summary"] and info["feedback"] is False


def test_target_precision_picks_another_point_of_the_stored_curve(tiny):
    stored = json.loads((tiny["text"] / "model.json").read_text())["metrics"]["decision"]
    with client(tiny["text"], target_precision=0.5) as c:
        info = c.get("/v1/model").json()
    expected = threshold_for(stored["curve"], 0.5)
    assert info["decision"]["target_precision"] == 0.5
    assert info["decision"]["threshold"] == pytest.approx(expected["threshold"])
    assert info["decision"]["coverage"] == pytest.approx(expected["coverage"])


def test_a_model_without_a_decision_sends_everything_to_review(tiny, tmp_path, caplog):
    old = tmp_path / "old"
    shutil.copytree(tiny["text"], old)
    meta = json.loads((old / "model.json").read_text())
    del meta["metrics"]["decision"]
    (old / "model.json").write_text(json.dumps(meta))
    with client(old) as c:
        answers = [c.post("/v1/categorise", json={"name": r["product_name"]}).json() for r in tiny["rows"][:6]]
        info = c.get("/v1/model").json()
    assert {a["decision"] for a in answers} == {"review"} and {a["threshold"] for a in answers} == {None}
    assert info["decision"]["threshold"] is None and "every answer is 'review'" in info["decision"]["summary"]
    assert any("records no decision threshold" in r.getMessage() for r in caplog.records)


# -- bad input ---------------------------------------------------------------------------------
def _bomb_png() -> bytes:
    """A small PNG declaring 30000 × 30000 pixels (900 MP): refused from its header."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("body, status, loc, words", [
    (b'{"name": "towel"', 422, ["body"], "JSON"),
    (b'{"name": 3}', 422, ["body", "name"], "string"),
    (b'{"name": "towel", "image_path": "/etc/passwd"}', 422, ["body", "image_path"], "not permitted"),
    (b'{}', 422, ["body"], "send a name or description"),
    (b'{"name": "  ", "description": ""}', 422, ["body"], "send a name or description"),
    (b'[1, 2]', 422, ["body"], "object"),
    (b'{"photo": "/etc/passwd"}', 422, ["body", "photo"], "base64"),
    (b'{"photo": "file:///etc/passwd"}', 422, ["body", "photo"], "base64"),
])
def test_malformed_missing_or_mistyped_fields_answer_422_naming_the_field(tiny, body, status, loc, words):
    with client(tiny["both"]) as c:
        response = c.post("/v1/categorise", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    detail = response.json()["detail"][0]
    assert detail["loc"] == loc and words.lower() in detail["msg"].lower()


@pytest.mark.parametrize("make, words", [
    (lambda p: b"this is not an image at all", "not an image"),
    (lambda p: p[: len(p) // 2], "truncated"),
    (lambda p: _bomb_png(), "too large"),
    (lambda p: b"", "empty"),
])
def test_bad_photos_answer_4xx_naming_the_problem(tiny, make, words):
    photo = make(photo_of(tiny, tiny["rows"][0]))
    with client(tiny["both"]) as c:
        as_file = c.post("/v1/categorise", data={"name": "x"}, files={"photo": ("p.jpg", photo, "image/jpeg")})
        as_json = c.post("/v1/categorise", json={"name": "x", "photo": b64(photo)})
        batch = c.post("/v1/categorise/batch", json=[{"name": "x"}, {"name": "y", "photo": b64(photo)}])
        assert c.post("/v1/categorise", json={"name": "x"}).status_code == 200  # the service is fine after
    for response in (as_file, as_json):
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "photo"]
        assert words in response.json()["detail"][0]["msg"]
    assert batch.status_code == 422 and batch.json()["detail"][0]["loc"] == ["body", 1, "photo"]


def test_uploads_over_the_limit_answer_413(tiny):
    photo = photo_of(tiny, tiny["rows"][0])
    limit_mb = (len(photo) - 1) / 1048576
    with client(tiny["both"], max_upload_mb=limit_mb, max_batch_mb=0.001) as c:
        as_file = c.post("/v1/categorise", files={"photo": ("p.jpg", photo, "image/jpeg")})
        as_json = c.post("/v1/categorise", json={"photo": b64(photo)})
        huge = c.post("/v1/categorise", content=b"{" + b" " * 3_000_000 + b"}",
                      headers={"Content-Type": "application/json"})
        batch = c.post("/v1/categorise/batch", json=[{"name": "x" * 2000}])
        metrics = c.get("/metrics").text
    for response in (as_file, as_json, huge, batch):
        assert response.status_code == 413 and "limit" in response.json()["detail"]
    assert 'pm_requests_total{endpoint="/v1/categorise",status="413"} 3.0' in metrics


def test_over_long_text_is_cut_not_refused(tiny):
    row = tiny["rows"][0]
    long_description = row["description"] + " filler" * 5000
    with client(tiny["text"], max_text_chars=1000) as c:
        answer = c.post("/v1/categorise", json={"name": row["product_name"], "description": long_description})
    assert answer.status_code == 200
    assert answer.json()["notes"] == ["description cut to its first 1000 characters"]


def test_a_model_whose_checksum_does_not_match_refuses_to_start(tiny, tmp_path):
    from click.testing import CliRunner

    from placedemarche.cli.main import cli

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny["text"], damaged)
    with open(objects_file(damaged), "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelError) as predict_error:
        load_model(damaged)
    with pytest.raises(ModelError) as serve_error:
        Categoriser(ServeSettings(model_dir=str(damaged)))
    assert str(serve_error.value) == str(predict_error.value)
    result = CliRunner().invoke(cli, ["serve", "--model", str(damaged), "--port", "1"])
    assert result.exit_code == 1
    assert "does not match the checksum" in result.output and len(result.output.strip().splitlines()) <= 2


# -- access key --------------------------------------------------------------------------------
def test_an_api_key_guards_every_endpoint_but_the_health_checks(tiny):
    key = "s3cret-key"
    with client(tiny["text"], api_key=key) as c:
        for path in ("/v1/model", "/metrics"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.get(path, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        refused = c.post("/v1/categorise", json={"name": "x"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert c.post("/v1/model/reload").status_code == 401
        ok = c.post("/v1/categorise", json={"name": "x"}, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def test_serve_warns_when_exposed_without_a_key(tiny, monkeypatch):
    import uvicorn
    from click.testing import CliRunner

    from placedemarche.cli.main import cli

    ran = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: ran.append(kwargs))
    monkeypatch.delenv("PM_API_KEY", raising=False)
    exposed = CliRunner().invoke(cli, ["serve", "--model", str(tiny["text"]), "--host", "0.0.0.0"])
    local = CliRunner().invoke(cli, ["serve", "--model", str(tiny["text"])])
    monkeypatch.setenv("PM_API_KEY", "k")
    keyed = CliRunner().invoke(cli, ["serve", "--model", str(tiny["text"]), "--host", "0.0.0.0"])
    assert exposed.exit_code == local.exit_code == keyed.exit_code == 0, exposed.output
    assert "without an API key" in exposed.output
    assert "without an API key" not in local.output and "without an API key" not in keyed.output
    assert [r["host"] for r in ran] == ["0.0.0.0", "127.0.0.1", "0.0.0.0"]


# -- readiness, reload -------------------------------------------------------------------------
def test_readyz_answers_once_the_model_is_warmed_up(tiny, monkeypatch):
    from placedemarche.serve import engine as engine_module

    release = threading.Event()
    real = engine_module.warm_up
    monkeypatch.setattr(engine_module, "warm_up", lambda loaded: (release.wait(30), real(loaded)))
    with client(tiny["text"]) as c:
        assert c.get("/healthz").status_code == 200
        waiting = c.get("/readyz")
        release.set()
        for _ in range(200):
            ready = c.get("/readyz")
            if ready.status_code == 200:
                break
            threading.Event().wait(0.05)
    assert waiting.status_code == 503 and waiting.json()["status"] == "warming up"
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_reload_swaps_the_model_and_a_bad_one_keeps_the_old(tiny, tmp_path):
    live = tmp_path / "live"
    shutil.copytree(tiny["text"], live)
    with client(live) as c:
        first = c.get("/v1/model").json()["model_id"]
        shutil.rmtree(live)
        shutil.copytree(tiny["both"], live)
        swapped = c.post("/v1/model/reload").json()
        assert swapped["reloaded"] and swapped["previous_model_id"] == first and swapped["model_id"] != first
        assert c.get("/v1/model").json()["modalities"] == ["text", "image"]
        with open(objects_file(live), "ab") as handle:
            handle.write(b"\0")
        kept = c.post("/v1/model/reload").json()
        assert not kept["reloaded"] and kept["model_id"] == swapped["model_id"]
        assert "does not match the checksum" in kept["message"]
        assert c.post("/v1/categorise", json={"name": "x"}).json()["model_id"] == swapped["model_id"]
        assert 'pm_model_reloads_total{outcome="failed"} 1.0' in c.get("/metrics").text


def test_in_flight_requests_finish_on_the_old_model(tiny, tmp_path):
    """A batch that started before a reload answers with the model it started with."""
    live = tmp_path / "live"
    shutil.copytree(tiny["text"], live)
    engine = Categoriser(ServeSettings(model_dir=str(live), max_wait_ms=0))
    started, release = threading.Event(), threading.Event()
    old_model = engine.current.model
    predict = old_model.predict_details

    def slow(catalog, *args, **kwargs):  # the old model, in the middle of a batch
        if catalog.names[0] == "slow":
            started.set()
            release.wait(30)
        return predict(catalog, *args, **kwargs)

    old_model.predict_details = slow

    async def scenario():
        from placedemarche.serve.products import Product

        await engine.start()
        await engine.ready.wait()
        old = engine.current.model_id
        in_flight = asyncio.create_task(engine.categorise([Product(id="a", name="slow")]))
        await asyncio.to_thread(started.wait, 30)
        shutil.rmtree(live)
        shutil.copytree(tiny["both"], live)
        reloaded = await engine.reload()
        release.set()
        first = (await in_flight)[0]
        after = (await engine.categorise([Product(id="b", name="towel")]))[0]
        await engine.stop()
        return old, reloaded, first, after

    old, reloaded, first, after = asyncio.run(scenario())
    assert reloaded["reloaded"] and first["model_id"] == old and after["model_id"] == reloaded["model_id"] != old


# -- metrics, batching, feedback ---------------------------------------------------------------
def test_metrics_count_requests_latency_batches_decisions_and_errors(tiny):
    with client(tiny["text"]) as c:
        for row in tiny["rows"][:5]:
            assert c.post("/v1/categorise", json={"name": row["product_name"]}).status_code == 200
        c.post("/v1/categorise", json={"name": 1})
        c.post("/v1/categorise", json={"name": "x", "photo": b64(b"not an image")})
        text = c.get("/metrics").text
    assert 'pm_requests_total{endpoint="/v1/categorise",status="200"} 5.0' in text
    assert 'pm_requests_total{endpoint="/v1/categorise",status="422"} 2.0' in text
    assert 'pm_request_seconds_count{endpoint="/v1/categorise"} 7.0' in text
    assert "pm_batch_size_count" in text and 'pm_errors_total{kind="validation"} 1.0' in text
    assert 'pm_errors_total{kind="photo"} 1.0' in text
    decisions = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("pm_decisions_total{"))
    assert decisions == 5.0  # the warm-up product is not counted


def test_dynamic_batching_groups_concurrent_products():
    sizes: list[int] = []

    def run(items):
        return [item * 10 for item in items]

    async def scenario():
        batcher = DynamicBatcher(run, max_batch=4, max_wait=0.5, on_batch=sizes.append)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit([i]) for i in range(10)))
        many = await batcher.submit(list(range(3)))
        await batcher.stop()
        return results, many

    results, many = asyncio.run(scenario())
    assert results == [[i * 10] for i in range(10)] and many == [0, 10, 20]
    assert sizes[:3] == [4, 4, 2] and max(sizes) <= 4


def test_a_failing_batch_fails_its_requests_only():
    def run(items):
        if "bad" in items:
            raise ValueError("boom")
        return items

    async def scenario():
        batcher = DynamicBatcher(run, max_batch=8, max_wait=0.0)
        await batcher.start()
        with pytest.raises(ValueError):
            await batcher.submit(["bad"])
        ok = await batcher.submit(["good"])
        await batcher.stop()
        return ok

    assert asyncio.run(scenario()) == ["good"]


def test_feedback_and_answers_go_to_the_database(tiny, tmp_path):
    from placedemarche.serve.db import open_db

    path = tmp_path / "service.sqlite"
    rows = tiny["rows"][:3]
    with client(tiny["text"], db=str(path)) as c:
        assert c.get("/v1/model").json()["feedback"] is True
        answers = [c.post("/v1/categorise", json={"id": r["uniq_id"], "name": r["product_name"]}).json()
                   for r in rows]
        given = c.post("/v1/feedback", json={"product_id": rows[0]["uniq_id"], "category": "Kitchen",
                                             "model_id": answers[0]["model_id"]})
        bad = c.post("/v1/feedback", json={"product_id": rows[0]["uniq_id"]})
    assert given.status_code == 200 and given.json()["recorded"] and given.json()["known_category"]
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "category"]
    with open_db(str(path)) as db:
        logged = [r for r in db.answer_rows() if r["product_id"] != "warm-up"]
        assert [(r["product_id"], r["category"], r["decision"]) for r in logged] == \
            [(a["id"], a["category"], a["decision"]) for a in answers]
        assert db.latest_categories() == {rows[0]["uniq_id"]: "Kitchen"}


def test_without_a_database_nothing_is_recorded(tiny):
    with client(tiny["text"]) as c:
        assert c.post("/v1/feedback", json={"product_id": "a", "category": "Kitchen"}).status_code == 404
        assert "/v1/feedback" not in c.get("/openapi.json").json()["paths"]


def test_the_seller_page_and_its_script_are_served_with_a_strict_policy(tiny):
    with client(tiny["text"]) as c:
        page, script = c.get("/"), c.get("/seller.js")
    assert page.status_code == script.status_code == 200
    assert 'id="photo"' in page.text and '<script src="/seller.js">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "innerHTML" not in script.text and "/v1/categorise" in script.text
