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
    from placedemarche.core.cache import FeatureCache
    from placedemarche.core.catalog import load_catalog
    from placedemarche.core.datasets import resolve_data
    from placedemarche.core.evaluate import EvaluationConfig, evaluate_combinations
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

    timings = []
    for label in ("first run (computes features)", "second run (cached features)"):
        started = time.perf_counter()
        report = evaluate_combinations(catalog, text, image, config=config, cache=cache,
                                       fuse=not args.no_fuse, out=Path(args.out))
        timings.append((label, time.perf_counter() - started, report))

    report = timings[0][2]
    print(f"# {len(catalog)} products ({len(catalog.dropped)} dropped), {len(report.categories)} "
          f"categories, text field '{args.text_field}', {args.seeds} seeds, reducer {config.reducer}")
    print()
    print("| features | ARI t-SNE | ARI reduced | ARI raw | NMI (t-SNE) | matched acc (t-SNE) | feature time (s) |")
    print("|---|---|---|---|---|---|---|")
    for run in report.runs:
        def ms(metric, space):
            return f"{run.mean(metric, space):.3f} ± {run.sd(metric, space):.3f}"
        secs = " + ".join(f"{v['seconds']:.1f}" for v in run.features.values())
        print(f"| {run.name} | {ms('ari', 'tsne')} | {ms('ari', 'reduced')} | {ms('ari', 'raw')} "
              f"| {ms('nmi', 'tsne')} | {ms('matched_accuracy', 'tsne')} | {secs} |")
    print()
    first, second = timings[0][1], timings[1][1]
    print(f"whole evaluation: first run {first:.1f} s, cached run {second:.1f} s "
          f"(features: {sum(sum(v['seconds'] for v in r.features.values()) for r in timings[0][2].runs if r.text is None or r.image is None):.1f} s computed, "
          f"cached run {first / second:.2f}x faster)")
    print(f"report files: {args.out}/results.json, results.csv, *.png")


if __name__ == "__main__":
    sys.exit(main())
