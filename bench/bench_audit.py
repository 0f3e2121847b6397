"""Audit bench: flip a known share of the Flipkart sample's categories at random, run the
audit, and measure precision and recall of its suspects at the flipped ids.

Usage::

    NLTK_DATA=../shared/models/nltk_data python bench/bench_audit.py \\
        --data ../shared/data/flipkart --out bench/out/audit

For each seed and share (1 %, 5 %, 10 % by default; seeds 0, 1, 2) the chosen products get
another category drawn uniformly from the other six. ``--repeats`` k-folds (3 by default, as
``pm audit``; fold seeds seed, seed+1, ...) of ``tfidf + bert + efficientnet-lite0``
(logistic-regression heads, ``fusion="mean"``, 5 folds) give out-of-fold probabilities of
each block and of their mean, averaged over the repeats: with mean fusion
each block's head is trained alone, so the tfidf and bert blocks' probabilities are exactly
what ``pm audit --text tfidf`` / ``--text bert`` compute on the same folds. The suspects are
then found by the audit's own :func:`placedemarche.audit.suspects.find_suspects` (cleanlab)
for every ``filter_by`` rule. Probabilities are kept under ``--out/oof`` (a rerun reuses them);
features come from the feature cache. Results: ``--out/results-r<repeats>.json`` and ``.md``.

The sample has label errors of its own: a suspect that is not a flipped product is counted
as a false positive in ``precision``, and ``precision_beyond_known`` does not count the
products the same audit flags on the unflipped sample (``--out/oof/clean-*.npz``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS = {"tfidf": "text:tfidf", "bert": "text:bert", "tfidf + bert": "text",
          "tfidf + bert + efficientnet-lite0": "text+image"}
FILTERS = ("lowest_quality", "prune_by_noise_rate", "prune_by_class", "both", "confident_learning")


def flip(labels: list[str], categories: list[str], rate: float, seed: int) -> tuple[list[str], np.ndarray]:
    """``rate`` of the labels moved to another category drawn at random (seeded)."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
    out = list(labels)
    for i in chosen:
        others = [c for c in categories if c != out[i]]
        out[i] = others[rng.integers(len(others))]
    return out, np.sort(chosen)


def out_of_fold(catalog, labels, seed: int, folds: int, path: Path, cache, repeats: int = 1) -> dict[str, np.ndarray]:
    """Each group's out-of-fold probabilities (and ``y``), computed once and kept in ``path``;
    with ``repeats`` > 1 the mean over the fold seeds ``seed``, ``seed+1``, ... (as ``pm audit
    --repeats``), each run kept beside ``path`` (``-r1``, ``-r2``, ...)."""
    if repeats > 1:
        runs = [out_of_fold(catalog, labels, seed + r, folds,
                            path if r == 0 else path.with_name(f"{path.stem}-r{r}{path.suffix}"), cache)
                for r in range(repeats)]
        return {key: runs[0][key] if key == "y" else np.mean([run[key] for run in runs], axis=0)
                for key in runs[0]}
    if path.is_file():
        with np.load(path) as data:
            return {key.replace("__", ":"): data[key] for key in data.files}
    from placedemarche.classify import TrainConfig, train

    config = TrainConfig(text=["tfidf", "bert"], image="efficientnet-lite0", fusion="mean", folds=folds, seed=seed)
    started = time.perf_counter()
    result = train(replace(catalog, labels=labels), config, cache=cache, final_fit=False)
    print(f"  k-fold {path.stem}: {time.perf_counter() - started:.0f} s, accuracy "
          f"{result.summary['results']['text+image']['accuracy_mean']:.3f}", flush=True)
    arrays = {"y": result.y, **{key: P for key, P in result.oof.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{key.replace(":", "__"): value for key, value in arrays.items()})
    return arrays


def suspects_of(arrays, group: str, catalog, categories, filter_by: str) -> set[int]:
    from placedemarche.audit.options import AuditOptions
    from placedemarche.audit.suspects import find_suspects

    labelled = replace(catalog, labels=[categories[i] for i in arrays["y"]])
    suspects, _ = find_suspects(arrays["y"], arrays[group], categories, labelled, AuditOptions(filter_by=filter_by))
    return {s.index for s in suspects}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "data" / "flipkart"))
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "audit"))
    parser.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.05, 0.10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3,
                        help="k-folds averaged per product (fold seeds seed, seed+1, ...), as pm audit --repeats")
    parser.add_argument("--filter-by", default="lowest_quality", choices=FILTERS,
                        help="the rule of the main table (every rule is in results.json)")
    parser.add_argument("--cache", help="feature cache directory (default: the user cache)")
    args = parser.parse_args(argv)
    os.environ.setdefault("NLTK_DATA", str(SHARED / "models" / "nltk_data"))

    from placedemarche.data.catalog import load_catalog
    from placedemarche.features.cache import FeatureCache

    out = Path(args.out)
    catalog = load_catalog(args.data).validated(on_missing="drop")
    categories = catalog.categories
    cache = FeatureCache(args.cache) if args.cache else FeatureCache()
    print(f"{len(catalog)} products, {len(categories)} categories, {args.folds} folds, "
          f"{os.cpu_count()} CPU cores", flush=True)
    clean = {seed: out_of_fold(catalog, catalog.labels, seed, args.folds, out / "oof" / f"clean-{seed}.npz", cache,
                               args.repeats) for seed in args.seeds}
    rows = []
    for rate in args.rates:
        for seed in args.seeds:
            labels, flipped = flip(catalog.labels, categories, rate, seed)
            arrays = out_of_fold(catalog, labels, seed, args.folds, out / "oof" / f"flip{rate:g}-{seed}.npz", cache,
                                 args.repeats)
            truth = set(flipped.tolist())
            for model, group in MODELS.items():
                for filter_by in FILTERS:
                    found = suspects_of(arrays, group, catalog, categories, filter_by)
                    known = suspects_of(clean[seed], group, catalog, categories, filter_by) - truth
                    hits = len(found & truth)
                    beyond = found - known
                    rows.append({"model": model, "rate": rate, "seed": seed, "filter_by": filter_by,
                                 "flipped": len(truth), "suspects": len(found), "hits": hits,
                                 "precision": round(hits / max(len(found), 1), 4),
                                 "recall": round(hits / max(len(truth), 1), 4),
                                 "known_suspects": len(known & found),
                                 "precision_beyond_known": round(hits / max(len(beyond), 1), 4)})
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results-r{args.repeats}.json").write_text(json.dumps(rows, indent=1))
    table = f"repeats={args.repeats}; " + markdown(rows, args.filter_by, args.rates)
    (out / f"results-r{args.repeats}.md").write_text(table)
    print(table)
    if 0.05 in args.rates:
        print(rules_table(rows, 0.05))
    return 0


def _span(values) -> str:
    return f"{np.mean(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def markdown(rows, filter_by: str, rates) -> str:
    lines = [f"filter_by={filter_by}; mean (min–max) over seeds",
             "", "| model | flipped | precision | recall | precision beyond known | suspects |",
             "|---|---|---|---|---|---|"]
    for model in MODELS:
        for rate in rates:
            sel = [r for r in rows if r["model"] == model and r["rate"] == rate and r["filter_by"] == filter_by]
            if sel:
                lines.append(f"| {model} | {rate:.0%} ({sel[0]['flipped']}) | {_span([r['precision'] for r in sel])} | "
                             f"{_span([r['recall'] for r in sel])} | {_span([r['precision_beyond_known'] for r in sel])} | "
                             f"{np.mean([r['suspects'] for r in sel]):.0f} |")
    return "\n".join(lines) + "\n"


def rules_table(rows, rate: float) -> str:
    lines = [f"\ncleanlab filter_by at {rate:.0%} flips, tfidf + bert + efficientnet-lite0",
             "| filter_by | precision | recall | precision beyond known |", "|---|---|---|---|"]
    for filter_by in FILTERS:
        sel = [r for r in rows if r["model"] == "tfidf + bert + efficientnet-lite0" and r["rate"] == rate
               and r["filter_by"] == filter_by]
        if sel:
            lines.append(f"| {filter_by} | {_span([r['precision'] for r in sel])} | {_span([r['recall'] for r in sel])} "
                         f"| {_span([r['precision_beyond_known'] for r in sel])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
