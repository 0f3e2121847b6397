"""SIFT bag of visual words on the Flipkart photos: extraction time and clustering quality.

    python bench/bench_sift.py [--images 1047] [--workers 2] [--seeds 3] [--data PATH]
                                [--no-ari | --no-timing]

Part 1, descriptor extraction only (decode, grayscale, resize, SIFT), one thread vs a pool of
--workers threads, for max_side 256 and 384 (the default; the shared photos are at most 384 px,
so 384 means no resize). Part 2, the whole plugin (descriptors + visual vocabulary + TF-IDF
histograms) for both max_side values, and the ARI of KMeans (k = 7) on its features, through
``evaluate_combinations`` (L2 rows, PCA 100, t-SNE 2-D, mean +- sd over --seeds seeds).

The default max_side was fixed (384) before these figures were taken; they are reported, not
used to tune it on the labels. Published SIFT/ORB figures on this dataset: ARI 0.00-0.08.
"""

from __future__ import annotations

import argparse
import os
import time


def describe_seconds(paths, max_side: int, workers: int) -> tuple[float, int]:
    from placedemarche.plugins.image.sift import SiftExtractor

    ext = SiftExtractor(max_side=max_side, workers=workers)
    started = time.perf_counter()
    descriptors = ext._describe(paths, "sift")
    return time.perf_counter() - started, sum(len(d) for d in descriptors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--images", type=int, default=None, help="first N photos (default: all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-ari", action="store_true", help="time the extraction only")
    parser.add_argument("--no-timing", action="store_true", help="measure the ARI only")
    args = parser.parse_args()

    from placedemarche.data.catalog import load_catalog
    from placedemarche.data.datasets import resolve_data

    catalog = load_catalog(resolve_data(args.data)).validated(text=None, image=True)
    if args.images:
        catalog = catalog.subset(range(min(args.images, len(catalog))))
    paths = catalog.image_paths
    print(f"{len(paths)} Flipkart photos, {os.cpu_count()} CPU(s)")
    if not args.no_timing:
        print()
        print(f"| max_side | descriptors | 1 thread (s) | {args.workers} threads (s) | speed-up | "
              f"images/s ({args.workers} threads) |")
        print("|---|---|---|---|---|---|")
        for max_side in (256, 384):
            one, count = describe_seconds(paths, max_side, 1)
            many, _ = describe_seconds(paths, max_side, args.workers)
            print(f"| {max_side} | {count} | {one:.1f} | {many:.1f} | {one / many:.2f} | "
                  f"{len(paths) / many:.0f} |", flush=True)
    if args.no_ari:
        return

    from placedemarche.evaluate.evaluator import EvaluationConfig, evaluate_combinations

    print()
    print("| spec | features (s) | ARI raw | ARI PCA | ARI t-SNE | NMI t-SNE |")
    print("|---|---|---|---|---|---|")
    config = EvaluationConfig(seeds=tuple(range(args.seeds)))
    for spec in ("sift:max_side=256", "sift"):
        report = evaluate_combinations(catalog, image=[spec], config=config)
        run = report.runs[0]
        seconds = sum(v["seconds"] for v in run.features.values())
        cells = [f"{run.mean('ari', s):.3f} ± {run.sd('ari', s):.3f}" for s in ("raw", "reduced", "tsne")]
        print(f"| {spec} | {seconds:.1f} | {' | '.join(cells)} | {run.mean('nmi', 'tsne'):.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
