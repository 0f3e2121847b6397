"""The seller page in a real headless Chromium (the system one, driven by playwright): a real
Flipkart photo and text uploaded through the page show the category the API gives for the same
product, its top 3 as bars and the decision; confirming records the feedback."""

from __future__ import annotations

import csv
import threading

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from helpers import CHROMIUM_FLAGS, free_port, wait_ready  # noqa: E402
from placedemarche.classify import TrainConfig, train  # noqa: E402
from placedemarche.data.catalog import load_catalog  # noqa: E402
from placedemarche.serve import ServeSettings, create_app  # noqa: E402



@pytest.mark.slow
def test_the_seller_page_shows_the_category_the_api_gives(chromium, flipkart_dir, tmp_path):
    from playwright.sync_api import sync_playwright
    import uvicorn

    catalog = load_catalog(flipkart_dir).validated(image=False)
    model_dir = tmp_path / "model"
    train(catalog, TrainConfig(text="tfidf", folds=2), out=model_dir)
    with open(next(flipkart_dir.glob("*.csv")), newline="", encoding="utf-8") as handle:
        row = next(r for r in csv.DictReader(handle) if r["uniq_id"] == catalog.ids[7])
    photo = flipkart_dir / "images" / row["image"]
    db = tmp_path / "service.sqlite"

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ServeSettings(model_dir=str(model_dir), db=str(db))),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        expected = httpx.post(f"{base}/v1/categorise", timeout=60,
                              data={"name": row["product_name"], "description": row["description"]},
                              files={"photo": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(tmp_path / "profile", executable_path=chromium,
                                                            args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                problems: list[str] = []
                page.on("console", lambda m: m.type == "error" and problems.append(m.text))
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto(base + "/")
                page.wait_for_function("() => document.getElementById('model-summary').textContent"
                                       ".includes('categories')", timeout=30_000)
                page.set_input_files("#photo", str(photo))
                page.fill("#name", row["product_name"])
                page.fill("#description", row["description"])
                page.wait_for_function("() => !document.getElementById('preview').hidden"
                                       " && document.getElementById('preview').naturalWidth > 0")
                page.click("#submit")
                page.wait_for_function("() => !document.getElementById('result').hidden", timeout=60_000)
                shown = page.text_content("#category")
                decision = page.text_content("#decision")
                labels = page.eval_on_selector_all(".top-label", "els => els.map(e => e.textContent)")
                widths = page.eval_on_selector_all(".bar", "els => els.map(e => parseFloat(e.style.width))")
                notes = page.text_content("#notes")
                page.select_option("#chosen", expected["top"][1]["category"])
                assert page.text_content("#confirm") == "Correct"
                page.click("#confirm")
                page.wait_for_function("() => document.getElementById('feedback-done').textContent !== ''")
                done = page.text_content("#feedback-done")
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(30)
    assert shown == expected["category"] == catalog.labels[7]
    assert decision == expected["decision"]
    assert [label.split(" — ")[0] for label in labels] == [t["category"] for t in expected["top"][:3]]
    assert widths == pytest.approx([100 * t["probability"] for t in expected["top"][:3]], abs=0.06)
    assert notes == "this model reads no photo: answered from the text"
    assert done.startswith("Corrected to") and problems == []
    from placedemarche.serve.db import open_db

    with open_db(str(db)) as service_db:
        assert list(service_db.latest_categories().values()) == [expected["top"][1]["category"]]
