"""`pm evaluate`: cluster products on text, image and fused features, and score the clusters."""

from __future__ import annotations

import time
from pathlib import Path

import click

from placedemarche.cli.options import category_options
from placedemarche.cli.options import (catalog_options, download_option, extractor_options, features_option,
                                       load_catalog_from_options)


@click.command("evaluate")
@extractor_options
@click.option("--reducer", default="pca:n_components=100", show_default=True, metavar="SPEC",
              help="Reducer for the 'reduced' space and before t-SNE (see pm list-reducers).")
@click.option("--cluster-on", type=click.Choice(["raw", "reduced", "tsne"]), multiple=True,
              help="Space(s) the clusterers run in (repeatable; default: all three).")
@click.option("--clusterer", "clusterer", multiple=True, metavar="SPEC",
              help="Clusterer, e.g. kmeans, hdbscan or 'gmm:covariance_type=full' (repeatable; "
                   "default: kmeans). Each runs on every feature combination (see pm plugins).")
@click.option("--clusters", type=click.IntRange(min=2),
              help="Number of clusters of the clusterers that take one (default: number of categories).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Number of seeds (clusterers and t-SNE); scores are mean ± sd over them.")
@click.option("--text-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of the text block in text × image fusion.")
@click.option("--scale", type=click.Choice(["l2", "standard", "none"]), default="l2", show_default=True,
              help="Row scaling of dense features (sparse ones are always L2-normalised).")
@click.option("--perplexity", type=float, default=30.0, show_default=True, help="t-SNE perplexity.")
@click.option("--tsne-input", type=click.Choice(["auto", "features", "reduced"]), default="auto",
              show_default=True,
              help="What t-SNE embeds: the scaled features, the reducer's output, or auto "
                   "(features when all are dense, reduced when one is sparse, e.g. TF-IDF).")
@click.option("--no-fuse", is_flag=True, help="Do not evaluate text × image combinations.")
@click.option("--jobs", type=click.IntRange(min=1),
              help="Clustering jobs (run × seed) at once, one per process (default: the CPUs available).")
@click.option("--approximate-above", type=click.IntRange(min=1), metavar="N",
              help="Products past which the evaluator approximates: k-means restarts on a sample, silhouette, "
                   "t-SNE fit and plots on a stratified sample (default: 20000).")
@click.option("--sample-size", type=click.IntRange(min=10), metavar="N",
              help="Products in that stratified sample (default: 10000).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Output directory (default: pm-results/evaluate-<time>).")
@click.option("--no-cache", is_flag=True, help="Recompute features instead of using the cache.")
@features_option
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@download_option
@category_options("2")
@catalog_options
def evaluate(text, image, text_field, reducer, cluster_on, clusterer, clusters, seeds, text_weight, scale,
             perplexity, tsne_input, no_fuse, jobs, approximate_above, sample_size, out, no_cache,
             features_store, no_progress, no_download, **catalog_kwargs):
    """Do products of one category group together? Cluster and score feature combinations.

    Runs every --text and --image extractor alone and every text × image pair, clusters each
    with every --clusterer (default kmeans) in the raw, reduced and t-SNE spaces, and writes results.json, results.csv and PNG
    plots (2-D maps, confusion matrices, ARI bar chart) to --out.

    \b
    Example:
      pm evaluate --text tfidf --text bow --image sift
    """
    from placedemarche.features.cache import FeatureCache
    from placedemarche.core.errors import PlaceDeMarcheError
    from placedemarche.cli.options import choose_categories
    from placedemarche.evaluate.evaluator import EvaluationConfig, evaluate_combinations
    from placedemarche.report.evaluation import write_evaluation_report
    from placedemarche.features.extraction import features_from, store_features, store_specs
    from placedemarche.core.plugins import check_specs
    from placedemarche.cli.options import fetch_missing_dataset, print_catalog_notes, print_store_notes
    from placedemarche.cli.render import console, progress_bars

    if features_store:
        text, image = store_specs(features_store, text, image, text_field)
    if not text and not image:
        raise PlaceDeMarcheError("nothing to evaluate: give --text and/or --image (see pm list-extractors)")
    clusterers = tuple(clusterer) or ("kmeans",)
    # all problems at once, before loading data
    check_specs({"text": text, "image": image, "reducer": [reducer], "clusterer": clusterers})
    config = EvaluationConfig(
        reducer=reducer, cluster_on=tuple(cluster_on) or ("raw", "reduced", "tsne"), clusterers=clusterers,
        n_clusters=clusters, seeds=tuple(range(seeds)), text_field=text_field, scale=scale,
        text_weight=text_weight, perplexity=perplexity, tsne_input=tsne_input, n_jobs=jobs,
        approximate_above=approximate_above, sample_size=sample_size,
    )
    config.check()
    fetch_missing_dataset(catalog_kwargs["data"], allowed=not no_download, progress=not no_progress)
    catalog = load_catalog_from_options({**catalog_kwargs, "text_field": text_field},
                                        text=bool(text), image=bool(image), labels=True)
    out_dir = Path(out) if out else Path("pm-results") / time.strftime("evaluate-%Y%m%d-%H%M%S")
    print_catalog_notes(catalog, text_field if text else None, bool(image))
    source = None
    if features_store:
        catalog, source = store_features(features_store, catalog, text, image, text_field)
        print_store_notes(source, features_store)
    catalog = choose_categories(catalog, catalog_kwargs, default_min_size=2)
    cache = None if no_cache else FeatureCache()
    with progress_bars(not no_progress), features_from(source):
        report = evaluate_combinations(catalog, text, image, config=config, cache=cache,
                                       fuse=not no_fuse)
        write_evaluation_report(report, out_dir)
    console.print(results_table(report))
    for what, how in report.approximations.items():  # one line each: what is not exact
        console.print(f"Approximated {what}: {how}", highlight=False, markup=False, soft_wrap=True)
    used = f"text field '{config.text_field}'" if text else "images only"
    console.print(
        f"{len(catalog)} products, {len(report.categories)} categories, {used}, "
        f"{len(config.seeds)} seed(s); {len(catalog.dropped)} dropped.", highlight=False)
    console.print(f"Results: {out_dir / 'results.json'}, {out_dir / 'results.csv'}, per-product clusters in "
                  f"{out_dir / 'assignments.csv'}; plots in {out_dir}/", highlight=False, markup=False)
    # the last line, where people look for what to open
    console.print(f"Report: {out_dir / 'report.html'}", highlight=False, markup=False, soft_wrap=True)


def _ms(run, metric, space):
    if space not in run.spaces:
        return "-"
    mean, sd = run.mean(metric, space), run.sd(metric, space)
    return "-" if mean != mean else f"{mean:.3f} ± {sd:.3f}"


def results_table(report):
    from rich.table import Table
    from rich.text import Text

    spaces = list(report.config.cluster_on)
    main = "tsne" if "tsne" in spaces else spaces[0]
    clusterers = ", ".join(report.config.clusterers)
    table = Table(title=f"Clustering ({clusterers}) vs true categories (ranked by ARI on {main})")
    table.add_column("#", justify="right")
    # Specs wrap instead of being cut ("mobilenet:alpha=0.75 + tfidf:ma…" named nothing).
    table.add_column("features", overflow="fold", min_width=14, ratio=3)
    for space in spaces:
        table.add_column(f"ARI {space}", justify="right")
    for column in ("NMI", "silh.", "match acc"):
        table.add_column(f"{column} {main}", justify="right")
    # HDBSCAN-like clusterers leave products in no cluster: how many, only when some did
    noisy = any(run.mean("noise", main) > 0 for run in report.runs if main in run.spaces)
    if noisy:
        table.add_column(f"noise {main}", justify="right")
    table.add_column("features s", justify="right", overflow="fold", ratio=1)
    for rank, run in enumerate(report.runs, start=1):
        feats = ", ".join(f"{v['seconds']:.1f}" + (" (cached)" if v["cached"] else "")
                          for v in run.features.values())
        table.add_row(str(rank), Text(run.name), *[_ms(run, "ari", s) for s in spaces],
                      _ms(run, "nmi", main), _ms(run, "silhouette", main),
                      _ms(run, "matched_accuracy", main), *([_ms(run, "noise", main)] if noisy else []), feats)
    return table
