"""Quality and speed of the extractors on the Flipkart sample: ARI etc., first vs cached run.

    python bench/bench_quality.py [--data PATH] [--text tfidf --text bow ...] [--image sift ...]
                                  [--seeds 5] [--out bench/out/quality]

Without --text/--image it evaluates every available built-in classic extractor (tfidf, bow,
word2vec, sift) and each text x image fusion. It runs the evaluation twice with a fresh
feature cache: the first run computes features, the second reads them from the cache, so the
printed timings show what the cache saves. Nothing here is tuned on the printed scores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

CLASSIC_TEXT = ("tfidf", "bow", "word2vec")
CLASSIC_IMAGE = ("sift",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="catalogue (default: PM_DATA_HOME's flipkart)")
    parser.add_argument("--text", action="append", default=None)
    parser.add_argument("--image", action="append", default=None)
    parser.add_argument("--text-field", default="both")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--no-fuse", action="store_true")
    parser.add_argument("--out", default="bench/out/quality")
    args = parser.parse_args()

    os.environ["PM_CACHE_DIR"] = tempfile.mkdtemp(prefix="pm-bench-cache-")
    from placedemarche.features.cache import FeatureCache
    from placedemarche.data.catalog import load_catalog
    from placedemarche.data.datasets import resolve_data
    from placedemarche.report.evaluation import write_evaluation_report
    from placedemarche.evaluate.evaluator import EvaluationConfig, evaluate_combinations
    from placedemarche.core.plugins import available_plugins

    def usable(kind, names):
        found = available_plugins(kind)
        return [n for n in names if n in found and found[n].cls.is_available()]

    text = args.text if args.text is not None else usable("text", CLASSIC_TEXT)
    image = args.image if args.image is not None else usable("image", CLASSIC_IMAGE)
    catalog = load_catalog(resolve_data(args.data)).validated(
        text=args.text_field, image=bool(image), on_missing="drop")
    config = EvaluationConfig(seeds=tuple(range(args.seeds)), text_field=args.text_field)
    cache = FeatureCache()

    from placedemarche.features.extraction import extract_features, extractor_inputs
    from placedemarche.core.plugins import create_plugin

    feature_times = []
    for kind, specs in (("text", text), ("image", image)):
        for spec in specs:
            times = []
            for _ in range(2):  # first: computed and stored; second: read from the cache
                extractor = create_plugin(kind, spec)
                items = extractor_inputs(extractor, catalog, config.text_field)
                started = time.perf_counter()
                feats = extract_features(extractor, items, cache=cache)
                times.append((time.perf_counter() - started, feats.from_cache))
            feature_times.append((spec, times))

    started = time.perf_counter()
    report = evaluate_combinations(catalog, text, image, config=config, cache=cache,
                                   fuse=not args.no_fuse)
    write_evaluation_report(report, Path(args.out))
    evaluation = time.perf_counter() - started

    print(f"# {len(catalog)} products ({len(catalog.dropped)} dropped), {len(report.categories)} "
          f"categories, text field '{args.text_field}', {args.seeds} seeds, reducer {config.reducer}")
    print()
    print("| features | ARI t-SNE | ARI reduced | ARI raw | NMI (t-SNE) | matched acc (t-SNE) |")
    print("|---|---|---|---|---|---|")
    for run in report.runs:
        def ms(metric, space):
            return f"{run.mean(metric, space):.3f} ± {run.sd(metric, space):.3f}"
        print(f"| {run.name} | {ms('ari', 'tsne')} | {ms('ari', 'reduced')} | {ms('ari', 'raw')} "
              f"| {ms('nmi', 'tsne')} | {ms('matched_accuracy', 'tsne')} |")
    print()
    print("| extractor | first run (s) | cached run (s) | speed-up |")
    print("|---|---|---|---|")
    for spec, ((cold, _), (warm, hit)) in feature_times:
        print(f"| {spec} | {cold:.2f} | {warm:.3f}{'' if hit else ' (cache missed!)'} | {cold / warm:.0f}x |")
    print()
    print(f"clustering and scoring all runs ({len(report.runs)} runs x {args.seeds} seeds, cached features): "
          f"{evaluation:.1f} s")
    print(f"report files: {args.out}/results.json, results.csv, *.png")


if __name__ == "__main__":
    sys.exit(main())
