"""The categorisation service: the FastAPI app, dynamic batching, the seller page.

The modules: ``settings`` (:class:`ServeSettings`), ``schemas`` (the pydantic request and answer
models), ``products`` (a request's product made ready for the model, its photo checked),
``batching`` (:class:`DynamicBatcher`), ``loaded`` (the model as served: id, checksum,
decision thresholds), ``engine`` (:class:`Categoriser` and its Prometheus metrics), ``routes``
(the endpoints), ``app`` (:func:`create_app`), ``db`` (answers and feedback in a database),
``ray_deployment`` (the same app as a Ray Serve deployment: `pm serve --engine ray`) and
``static/`` (the seller page). Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart,
prometheus-client).

Usage::

    from fastapi.testclient import TestClient
    from placedemarche.serve import ServeSettings, create_app

    with TestClient(create_app(ServeSettings(model_dir="models/m"))) as client:
        answer = client.post("/v1/categorise", json={"name": "Cotton bath towel"}).json()
        print(answer["category"], answer["decision"])
"""

from placedemarche.serve.app import create_app
from placedemarche.serve.engine import Categoriser
from placedemarche.serve.settings import ServeSettings

__all__ = ["Categoriser", "ServeSettings", "create_app"]
