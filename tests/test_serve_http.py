"""pm serve over real HTTP: the app under uvicorn on a free local port (concurrent requests
batched together, 413 before a body is read, schemathesis fuzzing the OpenAPI schema), and the
`pm serve` command itself in a subprocess (ready, answers, SIGHUP reloads the model)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from helpers import free_port, make_catalog, wait_ready  # noqa: E402
from placedemarche.classify import TrainConfig, train  # noqa: E402
from placedemarche.data.catalog import load_catalog  # noqa: E402
from placedemarche.serve import ServeSettings, create_app  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-http")
    csv_path = make_catalog(root / "tiny", per_category=8)
    catalog = load_catalog(csv_path).validated()
    train(catalog, TrainConfig(text="tfidf:min_df=1", folds=3), out=root / "text")
    train(catalog, TrainConfig(text="tfidf:min_df=1", classifier="knn:n_neighbors=3", folds=3), out=root / "knn")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        import csv

        rows = list(csv.DictReader(handle))
    return {"root": root, "rows": rows, "text": root / "text", "knn": root / "knn"}


@contextmanager
def serving(settings: ServeSettings):
    """The app under uvicorn in a thread, on a free port of 127.0.0.1."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        yield base
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_real_server_batches_concurrent_requests(tiny):
    rows = tiny["rows"]
    with serving(ServeSettings(model_dir=str(tiny["text"]), max_wait_ms=200, max_batch=64)) as base:
        def ask(row):
            return httpx.post(f"{base}/v1/categorise", timeout=60,
                              json={"id": row["uniq_id"], "name": row["product_name"]}).json()

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, rows[:16]))
        metrics = httpx.get(f"{base}/metrics").text
    assert [a["category"] for a in answers] == [r["category"] for r in rows[:16]]
    count = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("pm_batch_size_count")))
    total = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("pm_batch_size_sum")))
    assert total == 16 and count < 16  # some products were predicted together


def _raw_request(port: int, head: bytes, body_chunks=(), timeout: float = 20) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: the rest was never read
                break
        answer = b""
        while b"\r\n\r\n" not in answer:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
        return answer


def test_an_upload_over_the_limit_is_refused_before_it_is_read(tiny):
    settings = ServeSettings(model_dir=str(tiny["text"]), max_upload_mb=1)
    with serving(settings) as base:
        port = int(base.rsplit(":", 1)[1])
        # announces 2 GB and sends none of it: answered at once from the header
        announced = _raw_request(port, b"POST /v1/categorise HTTP/1.1\r\nHost: x\r\n"
                                       b"Content-Type: application/json\r\nContent-Length: 2000000000\r\n\r\n")
        # chunked, no length: refused once past the limit, not after the 50 MB it would send
        chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
        chunked = _raw_request(port, b"POST /v1/categorise HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                               (chunk for _ in range(50)))
        assert httpx.post(f"{base}/v1/categorise", json={"name": "still fine"}, timeout=60).status_code == 200
    assert announced.startswith(b"HTTP/1.1 413"), announced[:200]
    assert chunked.startswith(b"HTTP/1.1 413"), chunked[:200]


def test_schemathesis_finds_no_server_error_and_every_answer_matches_the_schema(tiny, tmp_path):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                     status_code_conformance)

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

    @schemathesis.serializer("application/x-ndjson")
    def json_lines(ctx, value):  # the batch's JSON lines body: a string in the schema
        return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else json.dumps(value).encode()
    model = tiny["knn"]
    with serving(ServeSettings(model_dir=str(model), db=str(tmp_path / "service.sqlite"), max_wait_ms=1)) as base:
        schema = schemathesis.openapi.from_dict(httpx.get(f"{base}/openapi.json").json())
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/v1/categorise", "/v1/categorise/batch", "/v1/model",
                                                   "/v1/feedback", "/healthz", "/readyz", "/metrics"}
        seen: dict[int, int] = {}
        for operation in operations:
            if operation.path == "/v1/model/reload":
                continue  # reloading on every example only tests the loading time
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode))
                def check(case):
                    response = case.call(base_url=base, timeout=60)
                    seen[response.status_code] = seen.get(response.status_code, 0) + 1
                    case.validate_response(response, checks=checks)

                try:
                    check()
                except Unsatisfiable:  # an operation taking no input has no invalid input
                    assert mode == GenerationMode.NEGATIVE
        health = httpx.get(f"{base}/readyz").json()
    assert health["status"] == "ready"
    assert not [status for status in seen if status >= 500]
    assert 200 in seen and 422 in seen  # both valid products and rejected ones were tried


def test_pm_serve_runs_and_sighup_reloads_the_model(tiny, tmp_path):
    live = tmp_path / "live"
    shutil.copytree(tiny["text"], live)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PM_API_KEY", None)
    pm = Path(sys.executable).parent / "pm"
    process = subprocess.Popen([str(pm), "serve", "--model", str(live),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    try:
        wait_ready(base, process=process)
        first = httpx.get(f"{base}/v1/model").json()["model_id"]
        answer = httpx.post(f"{base}/v1/categorise", json={"name": tiny["rows"][0]["product_name"]}, timeout=60)
        assert answer.status_code == 200 and answer.json()["model_id"] == first
        shutil.rmtree(live)
        shutil.copytree(tiny["knn"], live)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = httpx.get(f"{base}/v1/model").json()
            if info["model_id"] != first:
                break
            time.sleep(0.2)
        assert info["model_id"] != first and info["head"] == "knn:n_neighbors=3"
        assert process.poll() is None  # SIGHUP reloaded, it did not stop the server
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert "Seller page: http://127.0.0.1:" in output
    assert "model reloaded" in output
