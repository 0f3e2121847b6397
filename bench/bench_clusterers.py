"""Every built-in clusterer on the Flipkart sample: bert, efficientnet-lite0 and their fusion.

    python bench/bench_clusterers.py [--data PATH] [--seeds 3] [--out bench/out/clusterers]
                                     [--clusterer kmeans --clusterer hdbscan ...]

Runs one evaluation (``evaluate_combinations``) with every clusterer on the three feature
combinations, in the raw, reduced (PCA 100) and t-SNE spaces, with the default settings, and
prints one markdown table per space: ARI, NMI and Hungarian-matched accuracy (mean ± sd over
the seeds) and the fraction of products left as noise. Features and t-SNE maps come from the
feature cache (PM_CACHE_DIR); the first extraction of bert takes minutes on a 2-core CPU.
Noise (HDBSCAN's label -1) is scored as placedemarche.evaluate.metrics says: each noise product
is its own singleton cluster for ARI/NMI and counts as wrong for matched accuracy.
Nothing here is tuned on the printed scores: every clusterer runs with its defaults.
"""

from __future__ import annotations

import argparse
import time

CLUSTERERS = ("kmeans", "agglomerative", "gmm", "spectral", "hdbscan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="catalogue (default: PM_DATA_HOME's flipkart)")
    parser.add_argument("--text", default="bert")
    parser.add_argument("--image", default="efficientnet-lite0")
    parser.add_argument("--clusterer", action="append", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="bench/out/clusterers")
    args = parser.parse_args()

    from placedemarche.cli.render import progress_bars
    from placedemarche.features.cache import FeatureCache
    from placedemarche.data.catalog import load_catalog
    from placedemarche.data.datasets import resolve_data
    from placedemarche.report.evaluation import write_evaluation_report
    from placedemarche.evaluate.evaluator import EvaluationConfig, evaluate_combinations

    clusterers = tuple(args.clusterer or CLUSTERERS)
    # image=True: the 3 products without a photo are dropped from every run, so all compare alike
    catalog = load_catalog(resolve_data(args.data)).validated(text="both", image=True, on_missing="drop")
    config = EvaluationConfig(seeds=tuple(range(args.seeds)), clusterers=clusterers)
    started = time.perf_counter()
    with progress_bars():
        report = evaluate_combinations(catalog, text=[args.text], image=[args.image], config=config,
                                       cache=FeatureCache())
        write_evaluation_report(report, args.out)
    seconds = time.perf_counter() - started

    print(f"\n{len(catalog)} products, {len(report.categories)} categories, seeds "
          f"{list(config.seeds)}, {seconds:.0f} s in all (features from the cache: "
          f"{all(f['cached'] for r in report.runs for f in r.features.values())})\n")
    combos = [args.text, args.image, f"{args.text} + {args.image}"]
    runs = {(r.name.rsplit(" / ", 1)[0], r.clusterer): r for r in report.runs}
    for space in config.cluster_on:
        dims = {c: runs[(c, clusterers[0])].spaces[space].dims for c in combos}
        print(f"#### {space} ({', '.join(f'{c}: {d} dims' for c, d in dims.items())})\n")
        print("| features | clusterer | ARI | NMI | matched acc | noise | clusters found (seed 0) |")
        print("|---|---|---|---|---|---|---|")
        for combo in combos:
            for clusterer in clusterers:
                run = runs[(combo, clusterer)]
                res = run.spaces[space]
                labels = run.assignments[space][config.seeds[0]]
                found = len(set(labels.tolist()) - {-1})
                noise = res.mean("noise")
                print(f"| {combo} | {clusterer} | {_pm(res, 'ari')} | {_pm(res, 'nmi')} | "
                      f"{_pm(res, 'matched_accuracy')} | "
                      f"{'-' if noise == 0 else _pm(res, 'noise')} | {found} |")
        print()


def _pm(res, metric: str) -> str:
    return f"{res.mean(metric):.3f} ± {res.sd(metric):.3f}"


if __name__ == "__main__":
    main()
