"""Collection speed of `pm source run` against a local Open Food Facts look-alike server.

    python bench/bench_sources.py [--products 1000] [--page-size 100] [--image-latency 0.05]

Serves recorded-shape search pages (and tiny JPEGs, each answered after ``--image-latency``
seconds, like a CDN far away) from 127.0.0.1 in another process, so no internet is used, and
times the core's own overhead: JSON paging, per-page append + fsync + state file, CSV/JSON
lines rendering, and image download + verification, one image at a time and 8 at once. Against the real API the rate limit
(about 10 searches a minute, ``min_interval=6``) dominates: 100 products every 6 s.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse


def _jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 180, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def serve(total: int, latency: float, port_queue) -> None:
    jpeg = _jpeg()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            url = urlparse(self.path)
            if url.path.startswith("/img/"):
                time.sleep(latency)
                body, kind = jpeg, "image/jpeg"
            else:
                query = parse_qs(url.query)
                page, size = int(query["page"][0]), int(query["page_size"][0])
                base = f"http://127.0.0.1:{self.server.server_port}"
                products = [{"code": str(10**12 + i), "product_name": f"Champagne brut n°{i}",
                             "categories": "Boissons,Vins,Champagnes", "ingredients_text": "raisins",
                             "image_url": f"{base}/img/{i}.jpg", "brands": "Maison"}
                            for i in range((page - 1) * size, min(page * size, total))]
                body = json.dumps({"count": total, "page": page, "page_size": size,
                                   "products": products}).encode()
                kind = "application/json"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_queue.put(server.server_port)
    server.serve_forever()


def main() -> None:
    from placedemarche.data.collect import collect
    from placedemarche.core.plugins import create_plugin

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--image-latency", type=float, default=0.05)
    args = parser.parse_args()
    ports = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(args.products, args.image_latency, ports),
                                     daemon=True)
    server.start()
    base = f"http://127.0.0.1:{ports.get(timeout=30)}"
    print(f"{args.products} products, pages of {args.page_size}, local server in another process, "
          f"{1000 * args.image_latency:.0f} ms per image")
    with tempfile.TemporaryDirectory() as tmp:
        for label, out, images, workers in (("csv", "a.csv", None, 1), ("jsonl", "b.jsonl", None, 1),
                                            ("csv+images x1", "c.csv", "i1", 1),
                                            ("csv+images x8", "d.csv", "i8", 8)):
            source = create_plugin("source", "openfoodfacts", base_url=base, page_size=args.page_size,
                                   min_interval=0.0)
            started = time.perf_counter()
            summary = collect(source, "champagne", Path(tmp) / out, image_workers=workers,
                              images_dir=Path(tmp) / images if images else None)
            seconds = time.perf_counter() - started
            print(f"{label:<13} {summary.products} products, {summary.pages} pages in {seconds:.2f} s: "
                  f"{summary.products / seconds:,.0f} products/s, {1000 * seconds / summary.pages:.0f} ms/page"
                  + (f", {summary.images} images" if images else ""))
    server.terminate()
    print(f"real API at 10 searches/min with page_size={args.page_size}: "
          f"{args.page_size * 10:,} products/min at best (rate limit, not the core, is the bottleneck)")


if __name__ == "__main__":
    main()
