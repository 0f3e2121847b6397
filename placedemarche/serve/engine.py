"""The engine behind the service: :class:`Categoriser` holds the loaded model, batches the
products of concurrent requests (:class:`DynamicBatcher`), predicts each batch in a worker
thread, decides ``auto`` or ``review`` against the model's measured threshold, logs answers to
the database when there is one, and swaps in a reloaded model atomically. It runs without a
server: tests build it and call it directly or through FastAPI's TestClient.

Usage::

    engine = Categoriser(ServeSettings(model_dir="models/m"))
    app = create_app(engine)          # placedemarche.serve.app
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest

from placedemarche.classify.hierarchy import answer_paths
from placedemarche.data.catalog import Catalog
from placedemarche.serve.batching import DynamicBatcher
from placedemarche.serve.loaded import LoadedModel, load_for_serving
from placedemarche.serve.products import Product
from placedemarche.serve.settings import ServeSettings

log = logging.getLogger("placedemarche.serve")

disable_created_metrics()  # the *_created series double the output and nobody here reads them

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """Requests (by endpoint and status), their latency, the size of each batch predicted, the
    decisions given, and errors by kind (``photo``, ``validation``, ``too_large``, ``auth``,
    ``reload``, ``database``, ``internal``...)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("pm_requests", "HTTP requests answered", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("pm_request_seconds", "Time to answer a request", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("pm_batch_size", "Products predicted together (dynamic batching)",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.products = Counter("pm_products", "Products categorised", ["modality"], registry=self.registry)
        self.decisions = Counter("pm_decisions", "Answers by decision", ["decision"], registry=self.registry)
        self.errors = Counter("pm_errors", "Errors by kind", ["kind"], registry=self.registry)
        self.reloads = Counter("pm_model_reloads", "Model reloads by outcome", ["outcome"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Unanswerable(Exception):
    """A product the model could not categorise after all (no usable modality)."""


class Categoriser:
    """The loaded model, its dynamic batcher, metrics and database.

    Building one loads the model (raising :class:`placedemarche.classify.ModelError` with
    ``pm predict``'s one-line message when the directory cannot be used); :meth:`start` (in a
    running event loop) warms it up and starts the batcher; :meth:`categorise` answers
    products; :meth:`reload` swaps the model.
    """

    def __init__(self, settings: ServeSettings, db: Any = None):
        self.settings = settings.check()
        self.current: LoadedModel = load_for_serving(settings.model_dir, settings.target_precision)
        for note in self.current.notes:
            log.warning(note)
        if db is None and settings.db is not None:
            from placedemarche.serve.db import open_db

            db = open_db(settings.db)
        self.db = db
        self.metrics = ServiceMetrics()
        self.batcher = DynamicBatcher(self.predict_products, settings.max_batch, settings.max_wait_ms / 1000,
                                      on_batch=self.metrics.batch_size.observe)
        self.ready: asyncio.Event | None = None
        self.warm_error: str | None = None
        self._reload_lock: asyncio.Lock | None = None

    # -- life cycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Start the batcher and warm the model up in the background: ``/readyz`` answers 200
        once done; requests arriving before wait for it."""
        self.ready = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        await self.batcher.start(self.ready)
        self._warming = asyncio.create_task(self._warm())

    async def _warm(self) -> None:
        try:
            await asyncio.to_thread(warm_up, self.current)
        except Exception as exc:  # noqa: BLE001 - said by /readyz; requests will fail with it too
            self.warm_error = f"warm-up failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.error(self.warm_error)
            self.metrics.errors.labels("warmup").inc()
        assert self.ready is not None
        self.ready.set()

    async def stop(self) -> None:
        await self.batcher.stop()
        if self.db is not None:
            self.db.close()

    @property
    def is_ready(self) -> bool:
        return self.ready is not None and self.ready.is_set() and self.warm_error is None

    # -- answering -------------------------------------------------------------------
    async def categorise(self, products: list[Product]) -> list[dict[str, Any]]:
        """The answers for ``products``, in order, predicted with whatever else is queued."""
        answers = await self.batcher.submit(products)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers

    def predict_products(self, products: list[Product]) -> list[dict[str, Any] | Exception]:
        """Predict one batch (in a worker thread). The model is read once: a reload during the
        batch leaves it on the model it started with."""
        loaded = self.current
        answers = predict_with(loaded, products, self.settings.top_k)
        done = time.perf_counter()
        rows = []
        for product, answer in zip(products, answers):
            if isinstance(answer, Exception):
                continue
            answer["seconds"] = round(done - product.arrived, 6)
            self.metrics.decisions.labels(answer["decision"]).inc()
            self.metrics.products.labels(answer["modality"]).inc()
            rows.append({key: answer[key] for key in ("model_id", "category", "probability", "decision", "seconds")}
                        | {"product_id": answer["id"], "created": time.time()})
        if self.db is not None and rows:
            try:
                self.db.log_answers(rows)
            except Exception as exc:  # noqa: BLE001 - the answers still go out; the failure is counted
                self.metrics.errors.labels("database").inc()
                log.error("could not log %d answers to the database: %s", len(rows), exc)
        return answers

    # -- hot reload ------------------------------------------------------------------
    async def reload(self) -> dict[str, Any]:
        """Load the model directory again, warm it up, then swap it in; batches already running
        finish on the old one. A model that fails to load or warm up leaves the old one serving
        and says why."""
        assert self._reload_lock is not None, "start() the engine first"
        async with self._reload_lock:
            previous = self.current
            try:
                fresh = await asyncio.to_thread(self._load_and_warm)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old model
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self.metrics.reloads.labels("failed").inc()
                self.metrics.errors.labels("reload").inc()
                log.error("model reload failed, still serving %s: %s", previous.model_id, reason)
                return {"reloaded": False, "model_id": previous.model_id, "previous_model_id": previous.model_id,
                        "message": f"kept {previous.model_id}: {reason}"}
            self.current = fresh
            self.warm_error = None
            self.metrics.reloads.labels("ok").inc()
            for note in fresh.notes:
                log.warning(note)
            log.info("model reloaded: %s (was %s)", fresh.model_id, previous.model_id)
            return {"reloaded": True, "model_id": fresh.model_id, "previous_model_id": previous.model_id,
                    "message": f"now serving {fresh.model_id}"}

    def _load_and_warm(self) -> LoadedModel:
        fresh = load_for_serving(self.settings.model_dir, self.settings.target_precision)
        warm_up(fresh)
        return fresh


def predict_with(loaded: LoadedModel, products: list[Product], top_k: int) -> list[dict[str, Any] | Exception]:
    """The answers of ``loaded``'s model for ``products``. Photos are written to a private
    temporary directory (removed after) for the model's image readers."""
    model = loaded.model
    # a batch without photos needs no directory (creating and removing one costs milliseconds)
    with (tempfile.TemporaryDirectory(prefix="pm-serve-") if any(p.photo is not None for p in products)
          else contextlib.nullcontext("")) as tmp:
        paths: list[Path | None] = []
        for i, product in enumerate(products):
            if product.photo is None:
                paths.append(None)
                continue
            path = Path(tmp) / f"{i}.img"
            path.write_bytes(product.photo)
            paths.append(path)
        catalog = Catalog(ids=[str(i) for i in range(len(products))], names=[p.name for p in products],
                          descriptions=[p.description for p in products], image_paths=paths)
        proba, used = model.predict_details(catalog)
    k = min(top_k, len(model.categories))
    paths = answer_paths(model, proba, used, loaded.level_thresholds)
    answers: list[dict[str, Any] | Exception] = []
    for i, (product, row, modality) in enumerate(zip(products, proba, used)):
        if modality == "none" or np.isnan(row).all():
            answers.append(Unanswerable(f"product {product.id}: neither its text nor its photo could be used"))
            continue
        order = np.argsort(-row)[:k]
        probability = float(row[order[0]])
        threshold = loaded.thresholds.get(modality)
        auto = threshold is not None and probability >= threshold
        # the path down to the deepest level its threshold accepts (a level-1 model: its category when auto)
        path, level = paths[i][:2] if paths is not None else ((model.categories[order[0]], 1) if auto else ("", 0))
        answers.append({
            "id": product.id,
            "category": model.categories[order[0]],
            "probability": round(probability, 6),
            "top": [{"category": model.categories[j], "probability": round(float(row[j]), 6)} for j in order],
            "modality": modality,
            "path": path,
            "level": level,
            "decision": "auto" if auto else "review",
            "threshold": threshold,
            "model_id": loaded.model_id,
            "seconds": 0.0,
            "notes": list(product.notes),
        })
    return answers


def warm_up(loaded: LoadedModel) -> None:
    """Predict one made-up product with every modality the model reads, so lazily loaded
    weights, exports and thread pools are ready before the first real request."""
    from PIL import Image

    photo = None
    if "image" in loaded.model.config.modalities:
        buffer = io.BytesIO()
        Image.new("RGB", (96, 96), (200, 120, 40)).save(buffer, format="PNG")
        photo = buffer.getvalue()
    product = Product(id="warm-up", name="warm up product", description="a product to warm the model up",
                      photo=photo)
    answers = predict_with(loaded, [product], 1)
    if isinstance(answers[0], Exception):
        raise answers[0]
