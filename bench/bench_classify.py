"""Supervised classification bench: 5-fold stratified accuracy on the Flipkart sample with
real offline weights, frozen linear probes vs fine-tuning, text + image fusion, and the
training time per fold on this machine.

Usage::

    KERAS_HOME=../shared/models/keras NLTK_DATA=../shared/models/nltk_data \\
        python bench/bench_classify.py --data ../shared/data/flipkart --out bench/out/classify

Each run trains with :func:`placedemarche.classify.train` (one model per run, written
under --out) and prints the per-modality figures it measures: a text + image run also gives
the text-only and image-only heads of the same folds. Figures go to results.json and a
Markdown table (results.md) for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

RUNS = {
    # name: (TrainConfig kwargs, fine-tuning kwargs or None)
    "tfidf+mobilenet (frozen, concat)": (dict(text="tfidf", image="mobilenet:alpha=0.75"), None),
    "tfidf+mobilenet (frozen, mean)": (dict(text="tfidf", image="mobilenet:alpha=0.75", fusion="mean"), None),
    "tfidf+mobilenet (fine-tuned, mean)": (
        dict(text="tfidf", image="mobilenet:alpha=0.75", fusion="mean"),
        dict(backbone="mobilenet:alpha=0.75", unfreeze=6, epochs=15, finetune_epochs=10, views=3)),
    "bert+efficientnet-lite0 (frozen, concat)": (dict(text="bert", image="efficientnet-lite0"), None),
    "tfidf+bert+efficientnet-lite0 (frozen, mean)": (
        dict(text=["tfidf", "bert"], image="efficientnet-lite0", fusion="mean"), None),
    "tfidf+bert+efficientnet-lite0 (frozen, concat)": (dict(text=["tfidf", "bert"], image="efficientnet-lite0"), None),
    "efficientnet-lite0 384 px (frozen)": (dict(image="efficientnet-lite0:input_size=384"), None),
    "tfidf+bert+efficientnet-lite0 384 px (frozen, mean)": (
        dict(text=["tfidf", "bert"], image="efficientnet-lite0:input_size=384", fusion="mean"), None),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "data" / "flipkart"))
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "classify"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cache", help="feature cache directory (default: the user cache)")
    parser.add_argument("--runs", nargs="*", choices=list(RUNS), help="runs to do (default: all)")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_HOME", str(SHARED / "models" / "keras"))
    os.environ.setdefault("NLTK_DATA", str(SHARED / "models" / "nltk_data"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from placedemarche.features.cache import FeatureCache
    from placedemarche.data.catalog import load_catalog
    from placedemarche.classify import TrainConfig, train
    from placedemarche.classify.finetune import FineTuneConfig
    from placedemarche.report.plots import slug
    from placedemarche.report.training import write_training_report

    out = Path(args.out)
    catalog = load_catalog(args.data).validated(on_missing="drop")
    cache = FeatureCache(args.cache) if args.cache else FeatureCache()
    print(f"{len(catalog)} products ({len(catalog.dropped)} dropped: no image), "
          f"{len(catalog.categories)} categories, {args.folds} stratified folds, "
          f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})", flush=True)
    results = []
    for name in args.runs or list(RUNS):
        kwargs, tuning = RUNS[name]
        config = TrainConfig(folds=args.folds, **kwargs,
                             finetune=FineTuneConfig(**tuning) if tuning else None)
        started = time.perf_counter()
        result = train(catalog, config, cache=cache, out=out / slug(name))
        write_training_report(result, out / slug(name))
        total = time.perf_counter() - started
        summary = result.summary
        row = {"run": name, "total_seconds": round(total, 1),
               "fold_seconds_mean": summary["fold_seconds_mean"],
               "final_fit_seconds": summary["final_fit_seconds"],
               "features": summary["features"], "results": {}}
        for part, res in summary["results"].items():
            row["results"][part] = {k: res[k] for k in ("accuracy_mean", "accuracy_sd", "macro_f1_mean",
                                                          "macro_f1_sd", "per_class_f1")}
            print(f"{name:45s} {part:11s} accuracy {res['accuracy_mean']:.3f} ± {res['accuracy_sd']:.3f}"
                  f"  macro-F1 {res['macro_f1_mean']:.3f} ± {res['macro_f1_sd']:.3f}", flush=True)
        feature_s = ", ".join(f"{k} {v.get('seconds', '-')} s" + (" (cached)" if v.get("cached") else "")
                              for k, v in summary["features"].items())
        print(f"{'':45s} training {summary['fold_seconds_mean']:.1f} s per fold (mean), "
              f"final fit {summary['final_fit_seconds']:.1f} s, features: {feature_s}; total {total:.0f} s",
              flush=True)
        results.append(row)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"products": len(catalog), "folds": args.folds,
                                                       "cpus": os.cpu_count(), "runs": results}, indent=2))
    lines = ["| run | part | accuracy | macro-F1 | s / fold |", "|---|---|---|---|---|"]
    for row in results:
        for part, res in row["results"].items():
            lines.append(f"| {row['run']} | {part} | {res['accuracy_mean']:.3f} ± {res['accuracy_sd']:.3f} | "
                         f"{res['macro_f1_mean']:.3f} ± {res['macro_f1_sd']:.3f} | {row['fold_seconds_mean']:.1f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
