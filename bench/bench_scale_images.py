"""Image extraction at scale: the local engine vs Ray with 1 and 2 single-threaded actors.

N distinct photo files are made from the Flipkart sample (random crop of 70-100 % of each
side, horizontal flip, per-channel colour shift and brightness change, JPEG quality 90,
the sample's own size: longer side at most 384 px), then ``efficientnet-lite0``
(``threads=1, workers=1``, its default backend) turns them into features with each engine,
runs interleaved, in one process, so the throughputs are comparable. Reported per run:

- total: rows / wall time, including the model load (and, for Ray, the actors' start);
- steady: rows after the first batch / time after the first batch;
- driver RSS: the peak of this process's resident memory while the first quarter of the
  rows was done, and over the whole run (N=20000: at 5k rows and at 20k rows). The Ray
  runs' rows are handed to the engine as a generator, as ``pm extract`` does.

Targets (issue 14): Ray 1 actor >= 0.9x local, 2 actors >= 1.7x 1 actor, driver RSS flat.

Usage::

    PM_SHARED=/work/shared .venv/bin/python bench/bench_scale_images.py --n 2000
    .venv/bin/python bench/bench_scale_images.py --n 20000 --photos /tmp/pm-photos --repeat 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("PM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FLIPKART_IMAGES = SHARED / "data" / "flipkart" / "images"


def make_photos(n: int, out: Path, seed: int = 0) -> list[str]:
    """``n`` distinct JPEG files in ``out`` (kept between runs: existing files are reused)."""
    import cv2

    sources = sorted(FLIPKART_IMAGES.glob("*.jpg"))
    if not sources:
        raise SystemExit(f"no Flipkart photos in {FLIPKART_IMAGES} (set PM_SHARED)")
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"photo-{i:06d}.jpg" for i in range(n)]
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for source_index in sorted({i % len(sources) for i in todo}):
        image = cv2.imread(str(sources[source_index]))
        for i in [i for i in todo if i % len(sources) == source_index]:
            h, w = image.shape[:2]
            ch, cw = max(8, int(h * rng.uniform(0.7, 1))), max(8, int(w * rng.uniform(0.7, 1)))
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            variant = image[y:y + ch, x:x + cw].astype(np.float32)
            if rng.random() < 0.5:
                variant = variant[:, ::-1]
            variant = variant * rng.uniform(0.85, 1.15) + rng.uniform(-20, 20, size=3)
            cv2.imwrite(str(paths[i]), np.clip(variant, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if todo:
        print(f"made {len(todo)} photo files in {out} in {time.perf_counter() - started:.0f} s")
    return [str(p) for p in paths]


class RssSampler:
    """Peak resident memory of this process, sampled every 50 ms in a thread."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(0.05)

    def __enter__(self):
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_engine(engine, plugin, paths: list[str], batch_size: int) -> dict:
    rows = ((f"p{i}", p) for i, p in enumerate(paths))  # a generator, as the extract driver gives
    done, first_at, quarter_peak, failed = 0, None, None, 0
    started = time.perf_counter()
    with RssSampler() as sampler:
        for batch in engine.map(plugin, rows, batch_size):
            done += batch.rows
            failed += len(batch.failed)
            if first_at is None:
                first_at, first_rows = time.perf_counter(), done
            if quarter_peak is None and done >= len(paths) // 4:
                quarter_peak = max(sampler.peak, sampler.rss())
        end = time.perf_counter()
        whole_peak = max(sampler.peak, sampler.rss())
    assert done == len(paths), (done, len(paths))
    steady = (done - first_rows) / (end - first_at) if end > first_at and done > first_rows else float("nan")
    return {"total": done / (end - started), "steady": steady, "seconds": end - started, "failed": failed,
            "rss_quarter": quarter_peak, "rss_end": whole_peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="photo files (default 20000)")
    parser.add_argument("--photos", type=Path, default=None, help="folder for the generated photos (kept)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of (local, ray x1, ray x2), interleaved")
    parser.add_argument("--spec", default="efficientnet-lite0:threads=1,workers=1")
    parser.add_argument("--engines", default="local,ray x1,ray x2",
                        help="comma-separated subset of: local, ray x1, ray x2 (e.g. 'ray x2' for the RSS run alone)")
    args = parser.parse_args()

    from placedemarche.features.driver import get_engine
    from placedemarche.core.plugins import create_plugin

    photos = args.photos or Path(tempfile.gettempdir()) / "pm-bench-scale-photos"
    paths = make_photos(args.n, photos)
    plugin = create_plugin("image", args.spec).fit(paths[:32])
    print(f"{args.n} photos, {args.spec}, batch size {args.batch_size}, backend {plugin.runtime_backend()}, "
          f"{os.cpu_count()} CPUs, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    makers = {"local": lambda: get_engine("local"),
              "ray x1": lambda: get_engine("ray", concurrency=1, threads_per_worker=1),
              "ray x2": lambda: get_engine("ray", concurrency=2, threads_per_worker=1)}
    chosen = [name.strip() for name in args.engines.split(",")]
    unknown = [name for name in chosen if name not in makers]
    if unknown:
        raise SystemExit(f"unknown engine(s) {unknown}: use {', '.join(makers)}")
    engines = {name: makers[name]() for name in chosen}
    results: dict[str, list[dict]] = {name: [] for name in engines}
    try:
        for round_ in range(args.repeat):
            for name, engine in engines.items():
                result = run_engine(engine, plugin, paths, args.batch_size)
                results[name].append(result)
                print(f"round {round_ + 1} {name:7s} {result['total']:7.1f} img/s total, {result['steady']:7.1f} "
                      f"img/s steady, {result['seconds']:6.0f} s, driver peak RSS {result['rss_quarter'] / 2**20:6.0f} "
                      f"MiB at {args.n // 4} rows, {result['rss_end'] / 2**20:6.0f} MiB at {args.n}, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        for engine in reversed(list(engines.values())):
            engine.close()

    def best(name, key):
        return max(r[key] for r in results[name])

    print(f"\n| engine | img/s total (best) | img/s steady (best) | driver peak RSS at {args.n // 4} rows "
          f"(last round) | at {args.n} rows |")
    print("|---|---|---|---|---|")
    for name in engines:
        last = results[name][-1]
        print(f"| {name} | {best(name, 'total'):.1f} | {best(name, 'steady'):.1f} | "
              f"{last['rss_quarter'] / 2**20:.0f} MiB | {last['rss_end'] / 2**20:.0f} MiB |")
    for key in ("total", "steady"):
        if not {"local", "ray x1", "ray x2"} <= set(engines):
            break
        print(f"{key}: ray x1 / local = {best('ray x1', key) / best('local', key):.2f} (target >= 0.9), "
              f"ray x2 / ray x1 = {best('ray x2', key) / best('ray x1', key):.2f} (target >= 1.7)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
