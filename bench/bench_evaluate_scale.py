"""Evaluator at scale: per-stage seconds and peak RSS of a text-only evaluation on Flipkart
rows resampled to larger catalogues (issue 14, "Evaluator at scale").

    python bench/bench_evaluate_scale.py [--sizes 10000 50000] [--seeds 1] [--cluster-on reduced]
                                         [--keep DIR] [--generate-only] [--label X] [PM EVALUATE OPTIONS]

Each size is a synthetic catalogue: Flipkart rows drawn with replacement, categories kept,
texts perturbed (about 15 % of the words dropped, 5 % replaced by a word of another product
of the same category, and a random model code added), so no two products are identical and
the vocabulary grows with the catalogue as a real one does. Every size runs in a fresh
process (its own peak RSS) as ``pm evaluate --text tfidf --cluster-on reduced --seeds 1
--no-cache``, with timers around the evaluator's stages: extraction, scaling + reduction,
clustering, scores, the 2-D map, and the report files. It prints the stages per size, the
growth exponent of each between consecutive sizes (log ratio of times over log ratio of
sizes: 1 is linear, 2 quadratic) of wall and of CPU time (CPU time is the steadier figure on
a shared machine), and the load average. Options it does not know go to ``pm evaluate``
(e.g. ``--approximate-above 5000 --sample-size 5000 --label -approx`` to compare an
approximated run with the exact one at the same size).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLIPKART = Path(os.environ.get("PM_DATA_HOME", "/work/shared/data")) / "flipkart"


def generate_catalogue(n: int, path: Path, seed: int = 0) -> Path:
    """Write ``n`` Flipkart rows resampled with perturbed texts to ``path`` (CSV)."""
    source = next(FLIPKART.glob("*.csv"))
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rng = random.Random(seed)
    by_category: dict[str, list[list[str]]] = {}
    for row in rows:
        top = row["product_category_tree"].strip('["]').split(">>")[0].strip()
        by_category.setdefault(top, []).append(row["description"].split())

    def perturb(words: list[str], category: str) -> str:
        donors = by_category[category]
        out = []
        for word in words:
            draw = rng.random()
            if draw < 0.15:
                continue
            if draw < 0.20:
                donor = donors[rng.randrange(len(donors))]
                word = donor[rng.randrange(len(donor))] if donor else word
            out.append(word)
        return " ".join(out)

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uniq_id", "product_name", "product_category_tree", "description"])
        for i in range(n):
            row = rows[rng.randrange(len(rows))]
            category = row["product_category_tree"].strip('["]').split(">>")[0].strip()
            code = f"{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{rng.randrange(10_000):04d}"
            name = perturb(row["product_name"].split(), category) + f" {code}"
            writer.writerow([f"p{i:08d}", name, row["product_category_tree"],
                             perturb(row["description"].split(), category)])
    return path


# Run in a child process: timers wrapped around the evaluator's stages, then the CLI.
CHILD = r"""
import json, resource, sys, time
from collections import defaultdict
import placedemarche.evaluate.evaluator as ev
import placedemarche.report.evaluation as rp
stages, cpu = defaultdict(float), defaultdict(float)
def timed(module, name, stage):
    real = getattr(module, name)
    def wrapper(*args, **kwargs):
        started, started_cpu = time.perf_counter(), time.process_time()
        try:
            return real(*args, **kwargs)
        finally:
            stages[stage] += time.perf_counter() - started
            cpu[stage] += time.process_time() - started_cpu
    setattr(module, name, wrapper)
timed(ev, "extract_features", "extract")
timed(ev, "scale_rows", "scale")
timed(ev, "reduce_features", "reduce (SVD)")
timed(ev, "_cluster", "cluster")
timed(ev, "score_clustering", "scores")
timed(ev, "_tsne", "map (t-SNE)")
timed(rp, "write_assignments", "assignments.csv")
timed(rp, "plot_map", "map PNG")
import placedemarche.report.html_evaluation as hr
timed(hr, "write_evaluation_html", "report.html")
timed(rp, "write_evaluation_report", "report files (all)")
from placedemarche.cli.main import cli
started, started_cpu = time.perf_counter(), time.process_time()
try:
    cli(sys.argv[1:], standalone_mode=False)
finally:
    stages["total"] = time.perf_counter() - started
    cpu["total"] = time.process_time() - started_cpu
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print("STAGES " + json.dumps({"stages": dict(stages), "stages_cpu": dict(cpu), "peak_rss_mb": own.ru_maxrss / 1024,
                               "cpu": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime}))
"""


def run_child(args: list[str]) -> dict:
    """Run ``pm ARGS`` in a fresh process with the stage timers: its wall time, stages and peak RSS."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    wall = time.perf_counter() - started
    line = next((l for l in done.stdout.splitlines() if l.startswith("STAGES ")), None)
    if done.returncode != 0 or line is None:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"pm {' '.join(args[:3])} ... failed (exit {done.returncode})")
    result = json.loads(line[len("STAGES "):])
    result["wall"] = wall
    return result


def run_size(n: int, work: Path, args) -> dict:
    data = work / f"catalogue-{n}.csv"
    if not data.exists():
        generate_catalogue(n, data)
    out = work / f"evaluate-{n}{args.label}"
    cmd = ["evaluate", "--text", "tfidf", "--seeds", str(args.seeds),
           "--no-cache", "--no-progress", "--data", str(data), "--out", str(out)]
    for space in args.cluster_on:
        cmd += ["--cluster-on", space]
    cmd += args.evaluate_args
    result = run_child(cmd)
    results = json.loads((out / "results.json").read_text())
    result["approximations"] = results.get("approximations", {})
    result["ari"] = {space: values.get("ari_mean") for space, values in results["runs"][0]["spaces"].items()}
    result["silhouette"] = {space: values.get("silhouette_mean")
                            for space, values in results["runs"][0]["spaces"].items()}
    result["report_mb"] = (out / "report.html").stat().st_size / 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--cluster-on", nargs="+", default=["reduced"])
    parser.add_argument("--keep", type=Path, help="Directory for the catalogues and results (kept).")
    parser.add_argument("--generate-only", action="store_true", help="Write the catalogues and stop.")
    parser.add_argument("--label", default="", help="Suffix of the results directories.")
    args, args.evaluate_args = parser.parse_known_args()  # the rest goes to pm evaluate
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-evaluate-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.generate_only:
        for n in args.sizes:
            print(generate_catalogue(n, work / f"catalogue-{n}.csv"))
        return
    results = {}
    for n in args.sizes:
        load = os.getloadavg()
        results[n] = run_size(n, work, args)
        results[n]["load"] = (load, os.getloadavg())
        r = results[n]
        print(f"\n== {n} products: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"report.html {r['report_mb']:.1f} MB, load average before {load[0]:.2f} after "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        print(f"  {'stage':<18} {'wall s':>8} {'CPU s':>8}  share of CPU")
        for stage, seconds in sorted(r["stages"].items(), key=lambda kv: -kv[1]):
            used = r["stages_cpu"].get(stage, 0.0)
            print(f"  {stage:<18} {seconds:8.1f} {used:8.1f}  ({100 * used / r['stages_cpu']['total']:.0f} %)")
        print(f"  ARI {r['ari']}  silhouette {r['silhouette']}")
        for what, how in r["approximations"].items():
            print(f"  approximation: {what}: {how}")
    sizes = sorted(results)
    for small, large in zip(sizes, sizes[1:]):
        print(f"\ngrowth exponent {small} -> {large} (1 linear, 2 quadratic), of wall and of CPU time:")
        for stage in results[large]["stages"]:
            exponents = []
            for key in ("stages", "stages_cpu"):
                a, b = results[small][key].get(stage), results[large][key].get(stage)
                exponents.append(f"{math.log(b / a) / math.log(large / small):5.2f}" if a and b and a > 0.05 else "    -")
            print(f"  {stage:<18} {exponents[0]} {exponents[1]}")
    print(f"\nmachine: {os.cpu_count()} CPUs; load average now {os.getloadavg()}; "
          f"bench RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if not args.keep:
        print(f"(catalogues and results in {work})")


if __name__ == "__main__":
    main()
