"""The FastAPI app: :func:`create_app` wires the :class:`Categoriser` engine to the endpoints
(``routes``), the body-size limit, the metrics, the error answers and the API key; the same app
serves under uvicorn (`pm serve`) and can be mounted by another runner (a Ray Serve deployment
wraps ``create_app(engine)``).

Usage::

    from placedemarche.serve import ServeSettings, create_app
    app = create_app(ServeSettings(model_dir="models/m"))   # uvicorn.run(app)
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.serve.engine import Categoriser, Unanswerable
from placedemarche.serve.products import NothingToCategorise, PhotoError
from placedemarche.serve.settings import ServeSettings

log = logging.getLogger("placedemarche.serve")
#: Room for the text fields and the multipart framing around a photo of the upload limit, and
#: for base64's 4/3 inflation of a photo sent in JSON.
BODY_MARGIN = 1024 * 1024


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body over the limit ({limit / 1048576:g} MB): send a smaller photo "
                              "(pm serve --max-upload-mb / --max-batch-mb set the limits)")


class BodyLimit:
    """Refuses a body over the path's limit with 413 before reading it: at once from its
    Content-Length, or as soon as a chunked body passes the limit."""

    def __init__(self, app, settings: ServeSettings):
        self.app = app
        self.single = int(settings.max_upload_bytes * 4 / 3) + BODY_MARGIN
        self.batch = int(settings.max_batch_mb * 1024 * 1024)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit = self.batch if scope["path"].endswith("/batch") else self.single
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            error = BodyTooLarge(limit) if length.isdigit() else HTTPException(400, "bad Content-Length header")
            response = JSONResponse({"detail": error.detail}, status_code=error.status_code,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return await self.app(scope, limited_receive, send)


class RequestMetrics:
    """Counts each request by endpoint (its route's path template) and status, and its latency."""

    def __init__(self, app, engine: Categoriser, paths: frozenset[str] = frozenset()):
        self.app = app
        self.metrics = engine.metrics
        self.paths = paths  # a request refused before routing (413) is still counted by its path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or (scope["path"] if scope["path"] in self.paths else "unmatched")
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def field_error(loc: list, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc, "msg": message, "type": kind}]}, status_code=422)


def create_app(engine_or_settings: Categoriser | ServeSettings) -> FastAPI:
    """The service's app around ``engine_or_settings`` (an engine, or the settings to build one)."""
    from placedemarche.serve.routes import add_routes

    engine = engine_or_settings if isinstance(engine_or_settings, Categoriser) else Categoriser(engine_or_settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await engine.start()
        if engine.settings.reload_on_sighup:
            _reload_on_sighup(engine)
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(title="placedemarche categorisation service", version="1",
                  description="Suggests a product's category from its name, description and photo, with a "
                              "decision: auto (accept) or review (a person checks), from a threshold measured "
                              "on cross-validation before deployment.", lifespan=lifespan)
    app.state.engine = engine
    add_routes(app, engine)

    @app.exception_handler(PhotoError)
    async def photo_error(request: Request, exc: PhotoError):
        engine.metrics.errors.labels("too_large" if exc.status == 413 else "photo").inc()
        if exc.status == 413:
            return JSONResponse({"detail": str(exc)}, status_code=413)
        return field_error(getattr(exc, "loc", ["body", "photo"]), str(exc), "photo")

    @app.exception_handler(NothingToCategorise)
    async def nothing(request: Request, exc: NothingToCategorise):
        engine.metrics.errors.labels("empty_product").inc()
        return field_error(getattr(exc, "loc", ["body"]), str(exc), "empty_product")

    @app.exception_handler(Unanswerable)
    @app.exception_handler(PlaceDeMarcheError)
    async def unusable(request: Request, exc: Exception):
        engine.metrics.errors.labels("unusable").inc()
        return field_error(["body"], str(exc).splitlines()[0] if str(exc) else type(exc).__name__, "unusable")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        from fastapi.encoders import jsonable_encoder

        engine.metrics.errors.labels("validation").inc()
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse(jsonable_encoder({"detail": errors}), status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        engine.metrics.errors.labels("internal").inc()
        log.exception("internal error answering %s", request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}): see the service's log"},
                            status_code=500)

    app.add_middleware(BodyLimit, settings=engine.settings)
    app.add_middleware(RequestMetrics, engine=engine, paths=frozenset(getattr(r, "path", "") for r in app.routes))
    return app


def _reload_on_sighup(engine: Categoriser) -> None:
    """SIGHUP reloads the model (when the process's main thread runs the loop, as under uvicorn)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(engine.reload()))
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        log.warning("SIGHUP cannot reload the model here: use POST /v1/model/reload")


def app_from_env() -> FastAPI:
    """The app of a `pm serve --workers N` worker process (settings from the environment)."""
    settings = ServeSettings.from_env()
    settings.reload_on_sighup = False  # uvicorn's supervisor restarts the workers on SIGHUP
    return create_app(settings)
