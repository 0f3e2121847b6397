"""Hierarchical classification bench: the Flipkart sample at category levels 1-3, text (TF-IDF),
image (efficientnet-lite0, offline weights) and text + image, 5 stratified folds, for both ways
a model learns the tree (``--hierarchy flat`` and ``per-level``).

Usage::

    KERAS_HOME=../shared/models/keras NLTK_DATA=../shared/models/nltk_data \\
        python bench/bench_hierarchy.py --data ../shared/data/flipkart --out bench/out/hierarchy

Per run and group: out-of-fold accuracy and macro-F1 (mean ± sd over folds), and per level the
accuracy, macro-F1 and hierarchical F1 of the pooled out-of-fold paths, the per-level decision
thresholds (target precision 0.98) and the hP/hR/hF of the paths stopped at them. Categories with
fewer products than the folds are left out, as pm train does by default (at level 3 most of the
sample's 241 names). The image features are extracted once on the whole sample and reused for
each level's subset (the feature cache keys a set by its rows).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _seed_subset(cache, extractor, full_items, full_matrix, items) -> None:
    """Cache the features of ``items`` (a subset of ``full_items``) as extract_features would."""
    from placedemarche.features.cache import extractor_key
    from placedemarche.features.extraction import fingerprint

    key = extractor_key(extractor, fingerprint(items))
    if cache.load_features(key, rows=len(items)) is not None:
        return
    where = {str(p): i for i, p in enumerate(full_items)}
    rows = [where[str(p)] for p in items]
    cls = type(extractor)
    cache.save_features(key, full_matrix[rows], meta={
        "plugin": extractor.name, "kind": extractor.kind, "class": f"{cls.__module__}.{cls.__qualname__}",
        "params": extractor.get_params(), "cache_version": str(getattr(cls, "cache_version", "1")),
        "rows": len(items), "seconds": 0.0})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "data" / "flipkart"))
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "hierarchy"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--image", default="efficientnet-lite0")
    parser.add_argument("--runs", nargs="*", default=["1:flat", "2:flat", "3:flat", "2:per-level", "3:per-level"],
                        help="LEVEL:HIERARCHY pairs")
    args = parser.parse_args(argv)

    from placedemarche.classify import TrainConfig, train
    from placedemarche.core.plugins import create_plugin
    from placedemarche.data.catalog import load_catalog
    from placedemarche.data.categories import at_level
    from placedemarche.features.cache import FeatureCache
    from placedemarche.features.extraction import extract_features

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = FeatureCache()
    catalog = load_catalog(args.data).validated()
    extractor = create_plugin("image", args.image)
    full_items = list(catalog.image_paths)
    started = time.perf_counter()
    full = extract_features(extractor, full_items, cache=cache)
    print(f"{args.image}: {full.matrix.shape} in {time.perf_counter() - started:.1f} s (cached: {full.from_cache})",
          flush=True)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    for run in args.runs:
        level, hierarchy = run.split(":")
        sub = at_level(catalog, int(level), min_size=args.folds)
        _seed_subset(cache, extractor, full_items, full.matrix, list(sub.image_paths))
        started = time.perf_counter()
        result = train(sub, TrainConfig(text="tfidf", image=args.image, folds=args.folds, hierarchy=hierarchy),
                       cache=cache, final_fit=False)
        seconds = time.perf_counter() - started
        summary = result.summary
        entry = {"level": int(level), "hierarchy": hierarchy, "products": len(sub),
                 "categories": len(result.model.categories), "seconds": round(seconds, 1),
                 "category": {k: sub.category_info.get(k) for k in ("products_left_out", "shallow")},
                 "groups": {}}
        for group, res in summary["results"].items():
            point = (summary.get("decision") or {}).get("by_group", {}).get(group, {})
            entry["groups"][group] = {
                **{k: res[k] for k in ("accuracy_mean", "accuracy_sd", "macro_f1_mean", "macro_f1_sd")},
                "levels": res.get("levels"),
                "leaf_threshold": {k: point.get(k) for k in ("threshold", "coverage", "precision")},
                "level_thresholds": {lvl: {k: p.get(k) for k in ("threshold", "coverage", "precision")}
                                     for lvl, p in (point.get("levels") or {}).items()},
                "stopped": point.get("stopped")}
        results[run] = entry
        (out / "results.json").write_text(json.dumps(results, indent=2))
        for group, g in entry["groups"].items():
            hf = " ".join(f"L{k} acc {v['accuracy']:.3f} F1 {v['macro_f1']:.3f} hF {v['hF']:.3f}"
                          for k, v in (g["levels"] or {}).items())
            stop = g["stopped"]
            print(f"level {level} {hierarchy:9s} {group:10s} n={len(sub)} c={entry['categories']} "
                  f"acc {g['accuracy_mean']:.3f}±{g['accuracy_sd']:.3f} F1 {g['macro_f1_mean']:.3f}±{g['macro_f1_sd']:.3f} "
                  f"{hf} stopped {stop and (stop['hP'], stop['hR'], stop['hF'], stop['stopped_at'])} "
                  f"{seconds:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
