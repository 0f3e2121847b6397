"""Text-only catalogue at scale, end to end: `pm extract` into a feature store, then
`pm evaluate --features` on it (issue 14's acceptance bench).

    python bench/bench_scale.py [--sizes 10000 100000 1000000] [--keep DIR] [--cluster-on reduced]

Each size is a synthetic catalogue from bench_evaluate_scale.generate_catalogue (Flipkart rows
resampled with perturbed texts, categories kept). Per size, two fresh processes, each timed
(wall) with its own peak RSS:

    pm extract --text tfidf --data CAT --out STORE
    pm evaluate --features STORE --data CAT --text tfidf --cluster-on reduced --seeds 1

the second with timers around the evaluator's stages. It prints wall time and peak RSS per
size and per step, where the time goes, the growth exponent between consecutive sizes (log
ratio of times over log ratio of sizes: 1 linear, 1.1 about n log n at these sizes, 2
quadratic), and the load average (the machine is shared). Targets on a 2-core machine: 1M
products under 30 min end to end and under 8 GB peak RSS; growth at most n log n.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_evaluate_scale import generate_catalogue, run_child  # noqa: E402


def run_size(n: int, work: Path, args) -> dict:
    data = work / f"catalogue-{n}.csv"
    if not data.exists():
        started = time.perf_counter()
        generate_catalogue(n, data)
        print(f"[{n}] catalogue written in {time.perf_counter() - started:.1f} s", flush=True)
    store, out = work / f"store-{n}", work / f"evaluate-{n}"
    shutil.rmtree(store, ignore_errors=True)
    extract = run_child(["extract", "--text", "tfidf", "--data", str(data), "--out", str(store), "--no-progress"])
    print(f"[{n}] pm extract: {extract['wall']:.1f} s, peak RSS {extract['peak_rss_mb']:.0f} MB", flush=True)
    cmd = ["evaluate", "--features", str(store), "--data", str(data), "--text", "tfidf",
           "--seeds", "1", "--no-progress", "--out", str(out)]
    for space in args.cluster_on:
        cmd += ["--cluster-on", space]
    evaluate = run_child(cmd)
    print(f"[{n}] pm evaluate --features: {evaluate['wall']:.1f} s, peak RSS {evaluate['peak_rss_mb']:.0f} MB",
          flush=True)
    results = json.loads((out / "results.json").read_text())
    spaces = results["runs"][0]["spaces"]
    return {"extract": extract, "evaluate": evaluate,
            "wall": extract["wall"] + evaluate["wall"],
            "peak_rss_mb": max(extract["peak_rss_mb"], evaluate["peak_rss_mb"]),
            "ari": {space: values.get("ari_mean") for space, values in spaces.items()},
            "approximations": results.get("approximations", {}),
            "store_mb": sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--cluster-on", nargs="+", default=["reduced"])
    parser.add_argument("--keep", type=Path, help="Directory for catalogues, stores and results (kept).")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for n in args.sizes:
        load = os.getloadavg()
        r = results[n] = run_size(n, work, args)
        print(f"\n== {n:,} products: {r['wall']:.1f} s end to end ({r['wall'] / 60:.1f} min), peak RSS "
              f"{r['peak_rss_mb']:.0f} MB, store {r['store_mb']:.0f} MB, load average before {load[0]:.2f} "
              f"after {os.getloadavg()[0]:.2f}", flush=True)
        print(f"  pm extract              {r['extract']['wall']:8.1f} s  peak RSS {r['extract']['peak_rss_mb']:.0f} MB")
        print(f"  pm evaluate --features  {r['evaluate']['wall']:8.1f} s  peak RSS {r['evaluate']['peak_rss_mb']:.0f} MB")
        stages = r["evaluate"]["stages"]
        for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
            if stage != "total":
                print(f"    {stage:<20} {seconds:8.1f} s  ({100 * seconds / stages['total']:.0f} % of evaluate)")
        print(f"  ARI {r['ari']}")
        for what, how in r["approximations"].items():
            print(f"  approximation: {what}: {how}")
    sizes = sorted(results)
    for small, large in zip(sizes, sizes[1:]):
        def exponent(a, b):
            return math.log(b / a) / math.log(large / small) if a > 0.05 and b > 0 else float("nan")
        a, b = results[small], results[large]
        print(f"\ngrowth exponent {small:,} -> {large:,} (1 linear, 2 quadratic): end to end "
              f"{exponent(a['wall'], b['wall']):.2f}, extract {exponent(a['extract']['wall'], b['extract']['wall']):.2f}, "
              f"evaluate {exponent(a['evaluate']['wall'], b['evaluate']['wall']):.2f}, "
              f"peak RSS {exponent(a['peak_rss_mb'], b['peak_rss_mb']):.2f}")
    print(f"\nmachine: {os.cpu_count()} CPUs; load average now {os.getloadavg()}")
    if not args.keep:
        print(f"(catalogues, stores and results in {work})")


if __name__ == "__main__":
    main()
