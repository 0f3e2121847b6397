"""pm serve --engine ray: the same app as a Ray Serve deployment on a local Ray (2 replicas on a
free port of 127.0.0.1) gives the same answers as the app in process, batches through
``@serve.batch``, and keeps answering when one replica is killed; its options are checked
before Ray starts. Starting Ray and Serve takes tens of seconds on a busy machine: slow."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from helpers import free_port, tiny_text_model  # noqa: E402
from placedemarche.core.errors import PlaceDeMarcheError  # noqa: E402
from placedemarche.serve import ServeSettings, create_app  # noqa: E402
from placedemarche.serve.ray_deployment import RayServeOptions  # noqa: E402

VOLATILE = ("seconds",)  # time taken: the only field that may differ between two runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_text_model(tmp_path_factory.mktemp("serve-ray"))


# -- options, without Ray ------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    (RayServeOptions(replicas=2, max_replicas=4), "either --replicas"),
    (RayServeOptions(min_replicas=3, max_replicas=2), "above --max-replicas"),
    (RayServeOptions(replicas=0), "--replicas must be 1 or more"),
    (RayServeOptions(cpus_per_replica=0), "--cpus-per-replica"),
])
def test_bad_options_are_refused_in_one_line(options, message):
    with pytest.raises(PlaceDeMarcheError, match=message) as info:
        options.check()
    assert "\n" not in str(info.value)


def test_autoscaling_bounds_become_ray_serves_autoscaling_config():
    settings = ServeSettings(model_dir="m", max_batch=16)
    scaled = RayServeOptions(min_replicas=1, max_replicas=4, cpus_per_replica=2).deployment_options(settings)
    assert scaled["autoscaling_config"]["min_replicas"] == 1 and scaled["autoscaling_config"]["max_replicas"] == 4
    assert "num_replicas" not in scaled and scaled["ray_actor_options"] == {"num_cpus": 2}
    assert scaled["max_ongoing_requests"] >= 16
    fixed = RayServeOptions(replicas=3).deployment_options(settings)
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed


def test_the_cli_refuses_ray_options_with_uvicorn(tiny):
    from click.testing import CliRunner

    from placedemarche.cli.main import cli

    result = CliRunner().invoke(cli, ["serve", "--model", str(tiny["model"]), "--replicas", "2"])
    assert result.exit_code != 0 and "--engine ray" in result.output
    result = CliRunner().invoke(cli, ["serve", "--model", str(tiny["model"]), "--engine", "ray", "--workers", "2"])
    assert result.exit_code != 0 and "--workers" in result.output


# -- a real Ray Serve ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_service(tiny):
    pytest.importorskip("ray.serve")
    from placedemarche.serve.ray_deployment import start_on_ray

    service = start_on_ray(ServeSettings(model_dir=str(tiny["model"]), max_batch=16, max_wait_ms=50),
                           RayServeOptions(replicas=2, port=free_port(), cpus_per_replica=0.5), timeout=240)
    try:
        deadline = time.monotonic() + 120
        while httpx.get(f"{service.url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the Ray Serve replicas never got ready"
            time.sleep(0.2)
        yield service
    finally:
        service.close()


def _strip(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k not in VOLATILE}


@pytest.mark.slow
def test_ray_serve_gives_the_same_answers_as_the_app_in_process(tiny, ray_service):
    from fastapi.testclient import TestClient

    products = tiny["products"][:12]
    with TestClient(create_app(ServeSettings(model_dir=str(tiny["model"])))) as local:
        expected = [_strip(local.post("/v1/categorise", json=p).json()) for p in products]
        expected_batch = [_strip(a) for a in local.post("/v1/categorise/batch", json=products).json()["answers"]]
        expected_model = local.get("/v1/model").json()
        expected_error = local.post("/v1/categorise", json={"name": 3}).json()

    with httpx.Client(base_url=ray_service.url, timeout=60) as c:
        with ThreadPoolExecutor(8) as pool:  # concurrent: batched together by @serve.batch
            got = list(pool.map(lambda p: c.post("/v1/categorise", json=p), products))
        assert [r.status_code for r in got] == [200] * len(products)
        assert [_strip(r.json()) for r in got] == expected
        batch = c.post("/v1/categorise/batch", json=products)
        assert [_strip(a) for a in batch.json()["answers"]] == expected_batch
        model = c.get("/v1/model").json()
        error = c.post("/v1/categorise", json={"name": 3})
        scrapes = [c.get("/metrics").text for _ in range(8)]  # each from one replica or the other
    assert {k: v for k, v in model.items() if k != "loaded"} == {
        k: v for k, v in expected_model.items() if k != "loaded"}
    assert error.status_code == 422 and error.json() == expected_error
    # the 12 products of the batch request went through @serve.batch together (batches over 1)
    assert any(_metric(text, "pm_batch_size_sum") > _metric(text, "pm_batch_size_count") > 0 for text in scrapes)


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.mark.slow
def test_ray_serve_keeps_answering_when_a_replica_is_killed(tiny, ray_service):
    """SIGKILL one replica's process during a bounded load: the other replica answers, Ray Serve
    starts a new one, the failed requests are counted (at most those in flight on the dead
    replica), and every request after the replacement is ready succeeds."""
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if "categoriser" in a["name"] and a["name"].startswith("SERVE_REPLICA")]
    assert len(names) == 2, names
    victim = ray.get_actor(names[0], namespace="serve")
    pid = ray.get(victim.__ray_call__.remote(lambda self: os.getpid()))
    products = tiny["products"]
    concurrency, total = 4, 160
    outcome: list[tuple[float, int]] = []

    def one(i: int) -> tuple[float, int]:
        try:
            status = client.post("/v1/categorise", json=products[i % len(products)]).status_code
        except httpx.HTTPError:
            status = -1
        return time.monotonic(), status

    with httpx.Client(base_url=ray_service.url, timeout=60) as client:
        with ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(one, i) for i in range(40)]
            [f.result() for f in futures]
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            outcome = [f.result() for f in [pool.submit(one, i) for i in range(40, total)]]
        # the replacement: two replicas running again, one of them new
        deadline = time.monotonic() + 120
        while True:
            alive = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                     if "categoriser" in a["name"] and a["name"].startswith("SERVE_REPLICA")]
            if len(alive) == 2 and names[0] not in alive:
                break
            assert time.monotonic() < deadline, f"no replacement replica: {alive}"
            time.sleep(0.5)
        after = [client.post("/v1/categorise", json=products[i % len(products)]).status_code for i in range(20)]
    failed = [s for _, s in outcome if s != 200]
    print(f"ray serve replica killed: {len(failed)} of {len(outcome)} requests failed after the kill")
    assert len(failed) <= concurrency, failed  # at most the requests in flight on the dead replica
    assert any(t > killed and s == 200 for t, s in outcome)  # the service kept answering
    assert after == [200] * 20


def test_the_config_file_builder_reads_its_args(tiny):
    """``import_path: placedemarche.serve.ray_deployment:app_builder`` (serve run, KubeRay)."""
    pytest.importorskip("ray.serve")
    from placedemarche.serve.ray_deployment import app_builder

    app = app_builder({"model_dir": str(tiny["model"]), "max_batch": "8", "max_wait_ms": "2.5",
                       "target_precision": "0.9", "min_replicas": "1", "max_replicas": "3"})
    deployment = app._bound_deployment
    assert deployment.name == "categoriser"
    assert deployment._deployment_config.autoscaling_config.max_replicas == 3
    with pytest.raises(PlaceDeMarcheError, match="unknown Ray Serve application args: replica\\b"):
        app_builder({"model_dir": str(tiny["model"]), "replica": 2})
    with pytest.raises(PlaceDeMarcheError, match="args.model_dir"):
        app_builder({})
