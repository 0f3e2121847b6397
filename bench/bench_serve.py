"""pm serve under load: products/s and p50/p95/p99 latency at concurrency 1, 8 and 32 against a
real `pm serve` (uvicorn) on 127.0.0.1, beside `pm predict`'s products/s on the same products
in the same run.

    python bench/bench_serve.py [--models text,best] [--products 256] [--requests 1:48,8:192,32:384]
        [--batch-requests 16] [--max-batch 32] [--max-wait-ms 5] [--out bench/out/serve]

Models (trained on the Flipkart sample into OUT/models when missing, 3 folds):

- ``text``: ``pm train --text tfidf`` (text only; products sent without photo);
- ``best``: the best text + image model of docs/classify.md, ``--text tfidf --text bert --image
  efficientnet-lite0 --fusion mean`` (products sent with their photo, base64 in JSON).

For each model: `pm serve --model M` starts in a subprocess on a free port of 127.0.0.1 and is
waited for (``/readyz``); each concurrency level sends a fixed number of requests
(``--requests``, one product each, cycling over the ``--products`` first Flipkart products)
from that many asyncio clients (httpx, keep-alive), after a few warm-up requests, and stops
by itself. The served products/s are requests answered / wall time of the level; latency is
each request's time seen by its client. One more level sends ``--batch-requests`` requests of
32 products each to ``/v1/categorise/batch`` from 4 clients (a catalogue import). Then, with the server stopped, `pm predict`'s
products/s on the same products: its core (the model loaded once, then
``ClassifierModel.predict_details`` on the catalogue of those products, as pm predict runs it,
median of 3 rounds) and the whole command in a subprocess (start-up and loading included).
The machine is shared: the ratios of the same run are what to read, with the load average
printed beside them. Writes OUT/results.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLIPKART = Path(os.environ.get("PM_DATA_HOME", REPO.parent / "shared" / "data")) / "flipkart"
PM = [str(Path(sys.executable).parent / "pm")]  # the pm of this interpreter (.venv/bin/pm)
MODELS = {
    "text": ["--text", "tfidf"],
    "best": ["--text", "tfidf", "--text", "bert", "--image", "efficientnet-lite0", "--fusion", "mean"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flipkart_rows(n: int) -> list[dict]:
    csv_path = next(FLIPKART.glob("*.csv"))
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if (FLIPKART / "images" / r["image"]).exists()]
    return rows[:n]


def ensure_model(name: str, out: Path) -> Path:
    model = out / "models" / name
    if not (model / "model.json").exists():
        print(f"training the {name} model into {model} ...", flush=True)
        subprocess.run([*PM, "train", "--data", str(FLIPKART), *MODELS[name], "--folds", "3", "--out", str(model)],
                       check=True, stdout=subprocess.DEVNULL)
    return model


def payloads(rows: list[dict], with_photo: bool) -> list[bytes]:
    out = []
    for r in rows:
        body = {"id": r["uniq_id"], "name": r["product_name"], "description": r["description"]}
        if with_photo:
            body["photo"] = base64.b64encode((FLIPKART / "images" / r["image"]).read_bytes()).decode()
        out.append(json.dumps(body).encode())
    return out


# -- the served side -------------------------------------------------------------------------
def start_server(model: Path, port: int, max_batch: int, max_wait_ms: float) -> subprocess.Popen:
    import httpx

    process = subprocess.Popen([*PM, "serve", "--model", str(model), "--port", str(port), "--max-batch",
                                str(max_batch), "--max-wait-ms", str(max_wait_ms), "--log-level", "warning"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"pm serve exited: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit("pm serve not ready after 600 s")


async def load(base: str, bodies: list[bytes], concurrency: int, total: int, per_request: int = 1) -> dict:
    """``total`` requests from ``concurrency`` clients (``per_request`` > 1: that many products per
    request to /v1/categorise/batch); each request's latency, the wall time."""
    import httpx

    latencies: list[float] = []
    errors = 0
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        headers = {"content-type": "application/json"}
        path = "/v1/categorise"
        if per_request > 1:
            path = "/v1/categorise/batch"
            bodies = [b"[" + b",".join(bodies[(i + j) % len(bodies)] for j in range(per_request)) + b"]"
                      for i in range(0, len(bodies), per_request)]
        for body in bodies[:max(2, concurrency)]:  # warm-up: connections open, caches hot
            await client.post(path, content=body, headers=headers)

        async def worker():
            nonlocal next_index, errors
            while next_index < total:
                i = next_index
                next_index += 1
                started = time.perf_counter()
                response = await client.post(path, content=bodies[i % len(bodies)], headers=headers)
                latencies.append(time.perf_counter() - started)
                errors += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        metrics = (await client.get("/metrics")).text
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(round(q * (len(latencies) - 1))))]

    seen = {line.split()[0]: float(line.split()[-1]) for line in metrics.splitlines()
            if line.startswith(("pm_batch_size_sum ", "pm_batch_size_count "))}
    batches = [seen.get("pm_batch_size_sum", 0.0), seen.get("pm_batch_size_count", 0.0)]
    return {"concurrency": concurrency, "requests": total, "products_per_request": per_request, "errors": errors,
            "seconds": round(wall, 3), "products_per_s": round(total * per_request / wall, 2), "p50_ms": round(pct(0.50) * 1000, 1),
            "p95_ms": round(pct(0.95) * 1000, 1), "p99_ms": round(pct(0.99) * 1000, 1),
            "mean_batch_so_far": round(batches[0] / batches[1], 2) if len(batches) == 2 and batches[1] else None}


# -- pm predict on the same products ---------------------------------------------------------
def predict_speed(model_dir: Path, rows: list[dict], with_photo: bool, rounds: int = 3) -> dict:
    from placedemarche.classify import load_model
    from placedemarche.data.catalog import Catalog

    model = load_model(model_dir)
    catalog = Catalog(ids=[r["uniq_id"] for r in rows], names=[r["product_name"] for r in rows],
                      descriptions=[r["description"] for r in rows],
                      image_paths=[FLIPKART / "images" / r["image"] if with_photo else None for r in rows])
    model.predict_details(Catalog(ids=catalog.ids[:4], names=catalog.names[:4],
                                  descriptions=catalog.descriptions[:4], image_paths=catalog.image_paths[:4]))
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        model.predict_details(catalog)
        times.append(time.perf_counter() - started)
    core = statistics.median(times)
    with tempfile.TemporaryDirectory() as tmp:  # the whole command, start-up and loading included
        data = Path(tmp) / "products.csv"
        with open(data, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["uniq_id", "product_name", "description", "image"])
            writer.writeheader()
            for r in rows:
                writer.writerow({"uniq_id": r["uniq_id"], "product_name": r["product_name"],
                                 "description": r["description"], "image": r["image"] if with_photo else ""})
        started = time.perf_counter()
        subprocess.run([*PM, "predict", "--model", str(model_dir), "--data", str(data), "--image-dir",
                        str(FLIPKART / "images"), "--out", str(Path(tmp) / "p.csv")],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        command = time.perf_counter() - started
    return {"products": len(rows), "core_seconds": round(core, 3), "core_products_per_s": round(len(rows) / core, 2),
            "command_seconds": round(command, 3), "command_products_per_s": round(len(rows) / command, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="text,best")
    parser.add_argument("--products", type=int, default=256)
    parser.add_argument("--requests", default="",
                        help="CONCURRENCY:REQUESTS,... (default text 1:200,8:600,32:800; best 1:48,8:192,32:384)")
    parser.add_argument("--batch-requests", type=int, default=16,
                        help="requests of 32 products each to /v1/categorise/batch (4 clients)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "serve"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = flipkart_rows(args.products)
    results = {"cores": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
               "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "models": {}}
    for name in args.models.split(","):
        model = ensure_model(name, out)
        with_photo = name != "text"
        default = "1:200,8:600,32:800" if name == "text" else "1:48,8:192,32:384"
        levels = [tuple(int(x) for x in level.split(":")) for level in (args.requests or default).split(",")]
        bodies = payloads(rows, with_photo)
        entry = {"train": MODELS[name], "photo": with_photo, "load_before": os.getloadavg(), "levels": []}
        port = free_port()
        server = start_server(model, port, args.max_batch, args.max_wait_ms)
        try:
            for concurrency, total in levels:
                level = asyncio.run(load(f"http://127.0.0.1:{port}", bodies, concurrency, total))
                level["load_avg_1m"] = round(os.getloadavg()[0], 2)
                print(f"{name} c={concurrency}: {level}", flush=True)
                entry["levels"].append(level)
            # the batch endpoint: 32 products per request, 4 clients (a catalogue import, not a seller)
            level = asyncio.run(load(f"http://127.0.0.1:{port}", bodies, 4, args.batch_requests, per_request=32))
            level["load_avg_1m"] = round(os.getloadavg()[0], 2)
            print(f"{name} batch endpoint: {level}", flush=True)
            entry["batch_endpoint"] = level
        finally:
            server.terminate()
            server.wait(60)
        entry["predict"] = predict_speed(model, rows, with_photo)
        entry["load_after"] = os.getloadavg()
        print(f"{name} pm predict: {entry['predict']}", flush=True)
        by_c = {level["concurrency"]: level for level in entry["levels"]}
        if 32 in by_c:
            entry["served_c32_over_predict"] = round(by_c[32]["products_per_s"]
                                                     / entry["predict"]["core_products_per_s"], 2)
        if 1 in by_c and 8 in by_c:
            entry["p99_c8_over_p50_c1"] = round(by_c[8]["p99_ms"] / by_c[1]["p50_ms"], 2)
        if 1 in by_c and 32 in by_c:
            entry["c32_over_c1"] = round(by_c[32]["products_per_s"] / by_c[1]["products_per_s"], 2)
        results["models"][name] = entry
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n| model | concurrency | products/s | p50 ms | p95 ms | p99 ms | errors | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for name, entry in results["models"].items():
        for level in entry["levels"]:
            print(f"| {name} | {level['concurrency']} | {level['products_per_s']} | {level['p50_ms']} | "
                  f"{level['p95_ms']} | {level['p99_ms']} | {level['errors']} | {level['load_avg_1m']} |")
        b = entry["batch_endpoint"]
        print(f"| {name} | 4 x batch of 32 | {b['products_per_s']} | {b['p50_ms']} | {b['p95_ms']} | {b['p99_ms']} | "
              f"{b['errors']} | {b['load_avg_1m']} |")
        p = entry["predict"]
        print(f"| {name} | pm predict (core / command) | {p['core_products_per_s']} / {p['command_products_per_s']} "
              f"| | | | | |")
    for name, entry in results["models"].items():
        print(f"{name}: served c32 / pm predict = {entry.get('served_c32_over_predict')}, "
              f"p99 c8 / p50 c1 = {entry.get('p99_c8_over_p50_c1')}, c32 / c1 = {entry.get('c32_over_c1')}")


if __name__ == "__main__":
    main()
