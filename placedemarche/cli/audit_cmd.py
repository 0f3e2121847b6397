"""`pm audit`: the products whose declared category is probably wrong, and `--apply` of a
reviewed list of them to a corrected copy of the catalogue."""

from __future__ import annotations

import time
from pathlib import Path

import click

from placedemarche.audit.options import FILTERS, RANKINGS
from placedemarche.cli.options import catalog_options, category_options, download_option, extractor_options, features_option



@click.command("audit")
@extractor_options
@click.option("--classifier", metavar="SPEC", default="logreg", show_default=True,
              help="Classifier head plugin whose out-of-fold probabilities are audited (as pm train).")
@click.option("--C", "C", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Inverse regularisation of heads that take C, unless the --classifier spec sets it.")
@click.option("--fusion", type=click.Choice(["concat", "mean"]), default="mean", show_default=True,
              help="How several extractors combine: the mean of their heads' probabilities, or one head on "
                   "their concatenated features.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Stratified folds: each product's probabilities come from a model that never saw it.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Run the k-fold this many times (seeds SEED, SEED+1, ...) and average the probabilities "
                   "(1: a third of the time, fewer right suspects).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the folds and heads.")
@click.option("--group", metavar="GROUP",
              help="Prediction audited: text, image or text+image (default: the best in the cross-validation).")
@click.option("--filter-by", type=click.Choice(FILTERS), default="lowest_quality", show_default=True,
              help="Which products are suspects: the lowest --rank-by quality, as many as cleanlab's calibrated "
                   "count of label issues (lowest_quality), or a cleanlab find_label_issues rule.")
@click.option("--rank-by", type=click.Choice(RANKINGS), default="self_confidence", show_default=True,
              help="cleanlab's label-quality score that ranks the suspects (get_label_quality_scores).")
@click.option("--top", type=click.IntRange(min=0), default=15, show_default=True,
              help="Suspects listed in the terminal (all are in suspects.csv and report.html).")
@click.option("--apply", "apply_file", type=click.Path(dir_okay=False), metavar="REVIEWED.csv",
              help="Instead of auditing: write a corrected copy of the --data catalogue to --out, the rows "
                   "accepted (accept=yes) in this reviewed copy of suspects.csv taking their suggested_category.")
@click.option("--out", "-o", type=click.Path(),
              help="Audit: the directory to write (default: pm-results/audit-<time>). With --apply: the "
                   "corrected catalogue file (never the original).")
@click.option("--no-cache", is_flag=True, help="Recompute features instead of using the cache.")
@features_option
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@download_option
@category_options("the number of --folds")
@catalog_options
def audit(text, image, text_field, classifier, C, fusion, folds, repeats, seed, group, filter_by, rank_by, top,
          apply_file, out, no_cache, features_store, no_progress, no_download, **catalog_kwargs):
    """Find the products whose declared category is probably wrong.

    Out-of-fold probabilities of a classifier (the k-fold of pm train on the --text and/or
    --image features), then confident learning (cleanlab): suspects.csv (ranked, lowest label
    quality first, with a suggested category), categories.csv (estimated error rate per
    category), results.json and report.html (the suspects as cards).

    To correct the catalogue, copy suspects.csv, write yes in the accept column of the
    suggestions you agree with, and apply the copy: the original is never written.

    \b
    Examples:
      pm audit --text tfidf --image efficientnet-lite0 --out audit/
      pm audit --text tfidf --text bert --image efficientnet-lite0 --repeats 1
      pm audit --apply reviewed.csv --data catalog.csv -o catalog-corrected.csv
    """
    if apply_file:
        return _apply(apply_file, out, catalog_kwargs)

    from rich.markup import escape

    from placedemarche.audit.options import AuditOptions
    from placedemarche.audit.suspects import audit_catalog
    from placedemarche.classify import TrainConfig
    from placedemarche.cli.options import (choose_categories, fetch_missing_dataset, load_catalog_from_options,
                                           print_catalog_notes, print_store_notes)
    from placedemarche.cli.render import console, progress_bars
    from placedemarche.core.plugins import check_specs
    from placedemarche.features.cache import FeatureCache
    from placedemarche.features.extraction import features_from, store_features, store_specs
    from placedemarche.report.audit import write_audit_report

    if features_store:
        text, image = store_specs(features_store, text, image, text_field)
    check_specs({"text": text, "image": image, "classifier": [classifier]})
    config = TrainConfig(text=list(text) or None, image=list(image) or None, text_field=text_field,
                         classifier=classifier, C=C, fusion=fusion, folds=folds, seed=seed)
    options = AuditOptions(group=group, repeats=repeats, filter_by=filter_by, rank_by=rank_by)
    config.check()
    options.check()
    fetch_missing_dataset(catalog_kwargs["data"], allowed=not no_download, progress=not no_progress)
    catalog = load_catalog_from_options({**catalog_kwargs, "text_field": text_field},
                                        text=bool(text), image=bool(image), labels=True)
    print_catalog_notes(catalog, text_field if text else None, bool(image))
    source = None
    if features_store:
        # as pm train: the extractors that learn from data are fitted on each fold's training rows
        catalog, source = store_features(features_store, catalog, text, image, text_field, refit_learners=True)
        print_store_notes(source, features_store)
    catalog = choose_categories(catalog, catalog_kwargs, default_min_size=folds)
    out_dir = Path(out) if out else Path("pm-results") / time.strftime("audit-%Y%m%d-%H%M%S")
    with progress_bars(not no_progress), features_from(source):
        result = audit_catalog(catalog, config, options, cache=None if no_cache else FeatureCache())
        files = write_audit_report(result, out_dir)
    if top and result.suspects:
        console.print(suspects_table(result, top))
    accuracy = result.summary().get("out_of_fold_accuracy")
    console.print(
        f"{len(result.suspects)} suspects among {len(catalog)} products "
        f"({len(result.suspects) / len(catalog):.1%}); cleanlab estimates {result.estimated_error_rate:.1%} of the "
        f"declared categories wrong; worst: {escape(result.health[0]['category'])} "
        f"({result.health[0]['estimated_error_rate']:.1%}). Probabilities: {escape(result.group)}, out-of-fold"
        + (f", accuracy {accuracy:.3f}" if accuracy is not None else "") + f"; {result.seconds:.0f} s.",
        highlight=False)
    console.print(f"Suspects: {out_dir / files['suspects']} (copy it, write yes in the accept column, then "
                  f"pm audit --apply COPY.csv --data CATALOGUE -o CORRECTED.csv)", highlight=False, soft_wrap=True)
    console.print(f"Per category: {out_dir / files['categories']}; results: {out_dir / files['results']}",
                  highlight=False, soft_wrap=True)
    console.print(f"Report: {out_dir / files['html']}", highlight=False, soft_wrap=True)


def suspects_table(result, top: int):
    from rich.table import Table

    table = Table(title=f"Top {min(top, len(result.suspects))} of {len(result.suspects)} suspects "
                        "(lowest label quality first)")
    for name, justify in (("#", "right"), ("id", "left"), ("name", "left"), ("declared", "left"),
                          ("suggested", "left"), ("quality", "right")):
        table.add_column(name, justify=justify, overflow="fold" if name == "name" else "ellipsis")
    for s in result.suspects[:top]:
        name = s.name if len(s.name) <= 60 else s.name[:57] + "..."
        table.add_row(str(s.rank), s.id, name, f"{s.declared} ({s.p_declared:.0%})",
                      f"{s.suggested} ({s.p_suggested:.0%})", f"{s.quality:.3f}")
    return table


def _apply(apply_file, out, catalog_kwargs):
    from placedemarche.audit.apply import apply_review
    from placedemarche.cli.render import console, err_console
    from placedemarche.core.errors import PlaceDeMarcheError
    from placedemarche.data.datasets import resolve_data

    if not out:
        raise PlaceDeMarcheError("--apply writes a new catalogue: give its path with --out/-o "
                                 "(the original is never written)")
    result = apply_review(resolve_data(catalog_kwargs["data"]), apply_file, out,
                          id_column=catalog_kwargs["id_column"], label_column=catalog_kwargs["label_column"])
    if result.new_categories:
        err_console.print(f"[yellow]note:[/] accepted categories the catalogue did not have: "
                          f"{', '.join(result.new_categories)}", highlight=False)
    console.print(f"{len(result.changed)} categories corrected ({result.reviewed} reviewed rows) -> {result.out}",
                  highlight=False, soft_wrap=True)
