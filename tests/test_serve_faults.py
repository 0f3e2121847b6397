"""A worker dies under load: `pm serve --workers 2` on a free port of 127.0.0.1, one worker
process SIGKILLed (as the OOM killer would) while clients keep sending products. The other
worker keeps answering, uvicorn's supervisor starts a new worker, the requests that failed
are counted and reported (at most those in flight on the dead worker), and every request
after the replacement is up succeeds. (The same for a Ray Serve replica: tests/test_serve_ray.py.)

Clients open a connection per request, as a reverse proxy without keep-alive would: a
kept-alive connection to the dead worker would also fail its next request, which is the
client's retry policy to handle, not a lost request of the service."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from helpers import free_port, tiny_text_model  # noqa: E402

CONCURRENCY = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_text_model(tmp_path_factory.mktemp("serve-faults"))


def children(pid: int) -> set[int]:
    """The worker processes of uvicorn's supervisor (its child processes that run a worker;
    multiprocessing's resource tracker is not one)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"resource_tracker" not in cmdline:
                found.add(int(child))
    return found


def two_workers(pid: int, without: int | None = None) -> set[int] | None:
    found = children(pid)
    return found if len(found) == 2 and without not in found else None


def wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {seconds} s")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through /proc (Linux)")
def test_killing_one_uvicorn_worker_under_load_loses_at_most_the_requests_in_flight(tiny):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    pm = Path(sys.executable).parent / "pm"
    server = subprocess.Popen([str(pm), "serve", "--model", str(tiny["model"]), "--port", str(port),
                               "--workers", "2", "--log-level", "warning"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    products = tiny["products"]
    try:
        def ready() -> bool:
            assert server.poll() is None, server.stderr.read()
            try:
                return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 180, "pm serve ready")
        workers = wait_for(lambda: two_workers(server.pid), 60, "two workers")
        # both workers answering: a few requests on fresh connections reach each
        with httpx.Client(base_url=base, timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            wait_for(lambda: all(client.get("/readyz").status_code == 200 for _ in range(6)), 120, "both workers ready")

            def one(i: int) -> tuple[float, float, int]:
                started = time.monotonic()
                try:
                    status = client.post("/v1/categorise", json=products[i % len(products)]).status_code
                except httpx.TransportError:
                    status = -1  # the connection was cut: the worker died with the request
                return started, time.monotonic(), status

            victim = sorted(workers)[0]
            with ThreadPoolExecutor(CONCURRENCY) as pool:
                before = [pool.submit(one, i) for i in range(60)]
                # kill while requests are in flight
                wait_for(lambda: sum(f.done() for f in before) >= 20, 120, "20 requests answered")
                os.kill(victim, signal.SIGKILL)
                killed = time.monotonic()
                during = [pool.submit(one, i) for i in range(60, 200)]
                outcome = [f.result() for f in before + during]
            replacement = wait_for(lambda: two_workers(server.pid, without=victim), 60, "a replacement worker")
            new_pid = (replacement - workers).pop()
            # the new worker has loaded the model and serves (its answers come from its own pid's
            # socket: wait until every fresh connection is answered, then count)
            wait_for(lambda: all(client.get("/readyz").status_code == 200 for _ in range(6)), 120,
                     "the replacement ready")
            after = [one(i)[2] for i in range(40)]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
    failed = [(start, end, status) for start, end, status in outcome if status != 200]
    answered_after_kill = sum(1 for start, _, status in outcome if start > killed and status == 200)
    print(f"\nuvicorn worker {victim} SIGKILLed under load (concurrency {CONCURRENCY}): {len(failed)} of "
          f"{len(outcome)} requests failed, {answered_after_kill} answered after the kill; worker {new_pid} "
          f"replaced it; {after.count(200)} of {len(after)} answered after the restart")
    # only requests already in flight when the worker died can fail: they started before the kill
    assert all(start <= killed for start, _, _ in failed), failed
    assert len(failed) <= CONCURRENCY
    assert answered_after_kill > 0  # the other worker kept answering
    assert after == [200] * len(after)  # none lost after the restart
