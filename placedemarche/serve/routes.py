"""The endpoints, kept thin: parse the request into products (pydantic models), hand them to
the :class:`Categoriser`, return its answer as a model."""

from __future__ import annotations

import hmac
import json
import time
from importlib import resources

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.serve.engine import Categoriser
from placedemarche.serve.loaded import model_info
from placedemarche.serve.products import NothingToCategorise, PhotoError, Product, decode_base64, make_product
from placedemarche.serve.schemas import (BatchAnswer, CategoryAnswer, FeedbackIn, FeedbackOut, FieldProblems,
                                         Health, ModelInfo, Problem, ProductForm, ProductIn, ReloadOut)

PAGE_SECURITY = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                            "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
JSON_LINES = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/x-jsonlines")
PRODUCTS = TypeAdapter(list[ProductIn])
ERRORS = {401: {"model": Problem, "description": "Missing or wrong API key"},
          413: {"model": Problem, "description": "Body or photo over the upload limit"},
          422: {"model": FieldProblems, "description": "A field is missing, of the wrong type, or unusable"}}


def _json_body(schema: dict, extra: dict | None = None) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}, **(extra or {})}}}


def add_routes(app: FastAPI, engine: Categoriser) -> None:
    settings = engine.settings
    bearer = HTTPBearer(auto_error=False, description="pm serve --api-key-file (or PM_API_KEY)")

    async def require_key(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.api_key is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, settings.api_key.encode()):
            engine.metrics.errors.labels("auth").inc()
            raise HTTPException(401, "missing or wrong API key: send Authorization: Bearer KEY",
                                headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(require_key)] if settings.api_key is not None else []

    async def product_from(fields: dict, loc: list) -> Product:
        """A checked product (photo decoded in a worker thread), errors located at ``loc``."""
        photo = fields.get("photo")
        model = engine.current.model
        try:
            if isinstance(photo, str):
                photo = decode_base64(photo, settings.max_upload_bytes)
            return await run_in_threadpool(
                make_product, model, id=fields.get("id"), name=fields.get("name") or "",
                description=fields.get("description") or "", photo=photo,
                max_text_chars=settings.max_text_chars, max_photo_bytes=settings.max_upload_bytes)
        except PhotoError as exc:
            exc.loc = [*loc, "photo"]
            raise
        except NothingToCategorise as exc:
            exc.loc = loc
            raise

    def parse_json(raw: bytes, adapter: TypeAdapter, prefix: list):
        try:
            return adapter.validate_json(raw)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            raise RequestValidationError([{**e, "loc": (*prefix, *e["loc"])} for e in errors]) from None

    @app.post("/v1/categorise", response_model=CategoryAnswer, dependencies=guarded, responses=ERRORS,
              tags=["categorise"], summary="Categorise one product",
              openapi_extra=_json_body(ProductIn.model_json_schema(), {
                  "multipart/form-data": {"schema": ProductForm.model_json_schema()}}))
    async def categorise(request: Request) -> CategoryAnswer:
        """One product, as JSON (photo in base64) or a multipart form (photo as a file): its
        category, top-k, the modality used and the decision (auto or review)."""
        content_type = request.headers.get("content-type", "").lower()
        if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            try:
                form = await request.form(max_files=1, max_fields=10)
            except StarletteHTTPException as exc:  # a malformed form: the field error every other bad body gets
                if exc.status_code != 400:
                    raise
                raise RequestValidationError([{"loc": ("body",), "msg": str(exc.detail),
                                               "type": "form_invalid"}]) from None
            fields: dict = {}
            for key in ("id", "name", "description", "photo"):
                value = form.get(key)
                if value is None or value == "":
                    continue
                if key == "photo":
                    if hasattr(value, "read") and not value.filename and not value.size:
                        continue  # a form's file input left empty
                    value = await value.read() if hasattr(value, "read") else value.encode()
                elif not isinstance(value, str):
                    raise RequestValidationError([{"loc": ("body", key), "msg": f"{key} must be text, not a file",
                                                   "type": "string_type"}])
                fields[key] = value
            fields = {**parse_json(json.dumps({k: v for k, v in fields.items() if k != "photo"}).encode(),
                                   TypeAdapter(ProductIn), ["body"]).model_dump(exclude_none=True),
                      "photo": fields.get("photo")}
        else:
            fields = parse_json(await request.body(), TypeAdapter(ProductIn), ["body"]).model_dump()
        product = await product_from(fields, ["body"])
        return CategoryAnswer(**(await engine.categorise([product]))[0])

    @app.post("/v1/categorise/batch", response_model=BatchAnswer, dependencies=guarded, responses=ERRORS,
              tags=["categorise"], summary="Categorise up to N products",
              openapi_extra=_json_body(PRODUCTS.json_schema(), {
                  "application/x-ndjson": {"schema": {"type": "string",
                                                      "description": "One product (JSON object) per line"}}}))
    async def categorise_batch(request: Request) -> BatchAnswer:
        """Up to ``--batch-limit`` products, a JSON array or JSON lines: one answer each, in order."""
        started = time.perf_counter()
        raw = await request.body()
        content_type = request.headers.get("content-type", "").lower()
        if content_type.startswith(JSON_LINES):
            lines = [line for line in raw.splitlines() if line.strip()]
            items = [parse_json(line, TypeAdapter(ProductIn), ["body", i]) for i, line in enumerate(lines)]
        else:
            items = parse_json(raw, PRODUCTS, ["body"])
        if not items:
            raise RequestValidationError([{"loc": ("body",), "msg": "no product given", "type": "too_short"}])
        if len(items) > settings.batch_limit:
            raise HTTPException(413, f"{len(items)} products in one batch, at most {settings.batch_limit}: "
                                     "split it (pm serve --batch-limit sets the limit)")
        products = [await product_from(item.model_dump(), ["body", i]) for i, item in enumerate(items)]
        answers = await engine.categorise(products)
        return BatchAnswer(answers=[CategoryAnswer(**a) for a in answers],
                           seconds=round(time.perf_counter() - started, 6))

    @app.get("/v1/model", response_model=ModelInfo, dependencies=guarded, responses={401: ERRORS[401]},
             tags=["model"], summary="What the model is")
    async def describe_model() -> ModelInfo:
        return ModelInfo(**model_info(engine.current, engine.db is not None))

    @app.post("/v1/model/reload", response_model=ReloadOut, dependencies=guarded, responses={401: ERRORS[401]},
              tags=["model"], summary="Reload the model directory (atomic; a bad model keeps the old one)")
    async def reload_model() -> ReloadOut:
        return ReloadOut(**await engine.reload())

    if engine.db is not None:
        @app.post("/v1/feedback", response_model=FeedbackOut, dependencies=guarded,
                  responses={**ERRORS, 503: {"model": Problem, "description": "The database cannot record it now"}},
                  tags=["feedback"], summary="Record the category a person chose for a product",
                  openapi_extra=_json_body(FeedbackIn.model_json_schema()))
        async def feedback(request: Request) -> FeedbackOut:
            item = parse_json(await request.body(), TypeAdapter(FeedbackIn), ["body"])
            try:
                await run_in_threadpool(engine.db.add_feedback, item.product_id, item.category, item.model_id,
                                        name=item.name, description=item.description, photo_ref=item.photo_ref)
            except PlaceDeMarcheError as exc:  # the database is down or full: nothing was recorded
                engine.metrics.errors.labels("database").inc()
                raise HTTPException(503, f"feedback not recorded: {str(exc).splitlines()[0]}") from None
            return FeedbackOut(recorded=True, product_id=item.product_id, category=item.category,
                               known_category=item.category in engine.current.model.categories)

    @app.get("/healthz", response_model=Health, tags=["health"], summary="The process is up")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["health"], summary="The model is loaded and warmed up",
             responses={503: {"model": Health, "description": "Still warming up, or the warm-up failed"}})
    async def readyz(response: Response) -> Health:
        if engine.is_ready:
            return Health(status="ready", model_id=engine.current.model_id)
        response.status_code = 503
        return Health(status="warming up" if engine.warm_error is None else "failed", detail=engine.warm_error)

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=guarded, tags=["health"],
             summary="Prometheus metrics", responses={401: ERRORS[401], 200: {
                 "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST

        return PlainTextResponse(engine.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def seller_page() -> HTMLResponse:
        return HTMLResponse(_static("seller.html"), headers=PAGE_SECURITY)

    @app.get("/seller.js", include_in_schema=False)
    async def seller_script() -> Response:
        return Response(_static("seller.js"), media_type="text/javascript", headers=PAGE_SECURITY)


def _static(name: str) -> str:
    return resources.files("placedemarche.serve").joinpath("static", name).read_text(encoding="utf-8")
