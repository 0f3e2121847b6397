"""`pm train` and `pm predict`: supervised classification of products into categories."""

from __future__ import annotations

import time
from pathlib import Path

import click

from placedemarche.cli.options import (catalog_options, category_options, download_option, extractor_options,
                                       features_option)


def feedback_option(func):
    """Add --feedback DB to pm train."""
    return click.option(
        "--feedback", "feedback_db", metavar="DB",
        help="Apply the categories people chose in pm serve (its --db: an SQLite file or a database URL): "
             "the latest feedback per product id overrides the catalogue's category, or labels a product "
             "that had none; feedback for products not in the catalogue is reported and not used.")(func)


def load_training_catalog(catalog_kwargs: dict, *, text_field: str, text: bool, image: bool, feedback_db: str | None):
    """The validated training catalogue of the catalogue options, with the latest feedback of
    ``feedback_db`` applied to its labels before validation (so a product labelled only by
    feedback is kept). Says on stderr what the feedback changed."""
    from rich.markup import escape

    from placedemarche.cli.options import load_catalog_from_options, load_unvalidated_catalog
    from placedemarche.cli.render import err_console
    from placedemarche.data.feedback import apply_feedback
    from placedemarche.serve.db import open_db

    kwargs = {**catalog_kwargs, "text_field": text_field}
    if feedback_db is None:
        return load_catalog_from_options(kwargs, text=text, image=image, labels=True)
    with open_db(feedback_db, create=False) as db:
        corrections = db.latest_categories()
    catalog = load_unvalidated_catalog(kwargs, labels=False)
    applied = apply_feedback(catalog, corrections)
    style = "yellow" if applied.unknown else "default"
    err_console.print(f"[{style}]{escape(applied.summary())}[/]", highlight=False, soft_wrap=True)
    return applied.catalog.validated(text=kwargs.pop("text_field") if text else None, image=image, labels=True,
                                     on_missing=kwargs.pop("on_missing"))


@click.command("train")
@extractor_options
@click.option("--classifier", metavar="SPEC", default="logreg", show_default=True,
              help="Classifier head plugin on frozen features, with optional parameters: logreg, "
                   "'logreg:C=0.5', 'knn:n_neighbors=5', ... (the built-ins and installed plugins' heads: "
                   "pm list classifier).")
@click.option("--C", "C", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Inverse regularisation of heads that take C, unless the --classifier spec sets it "
                   "(features are scaled to unit row norm).")
@click.option("--fusion", type=click.Choice(["concat", "mean"]), default="concat", show_default=True,
              help="How several extractors combine: one head on their concatenated features, or the mean of "
                   "their heads' probabilities.")
@click.option("--folds", type=click.IntRange(min=0), default=5, show_default=True,
              help="Stratified cross-validation folds (0: train only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the folds, heads and augmentation.")
@click.option("--class-weight", is_flag=True,
              help="Weigh classes inversely to their frequency (heads that take class_weight, unless the "
                   "--classifier spec sets it; and the fine-tuned network's loss).")
@click.option("--finetune", is_flag=True,
              help="Fine-tune the --image Keras backbone (new head, then top layers) instead of a frozen head.")
@click.option("--unfreeze", type=click.IntRange(min=0), default=6, show_default=True,
              help="Top layers of the backbone trained in the fine-tuning phase (0: head only).")
@click.option("--epochs", type=click.IntRange(min=1), default=15, show_default=True,
              help="Most epochs training the new head (early stopping on a validation split).")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=10, show_default=True,
              help="Most epochs with the top layers unfrozen.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Learning rate of the head phase.")
@click.option("--finetune-lr", type=float, default=1e-4, show_default=True,
              help="Learning rate of the fine-tuning phase (lower, not to wreck the pretrained layers).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Random flips, rotations, zooms and contrast changes of training images.")
@click.option("--views", type=click.IntRange(min=1), default=4, show_default=True,
              help="Training views per image with --augment: the original plus VIEWS-1 augmented copies.")
@click.option("--patience", type=click.IntRange(min=1), default=3, show_default=True,
              help="Early stopping patience in epochs.")
@click.option("--target-precision", type=click.FloatRange(0, 1, min_open=True), default=0.98, show_default=True,
              help="Precision the automatically accepted predictions must reach: the decision threshold giving it "
                   "is measured on the out-of-fold predictions and kept in the model (pm serve answers auto / review).")
@click.option("--hierarchy", type=click.Choice(["per-level", "flat"]), default="per-level", show_default=True,
              help="Below --category-level 1: one head per level combined along the valid paths (per-level), or "
                   "one head over the leaves, their probabilities summed up the tree (flat: about 3x faster).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Model directory to write (default: pm-results/model-<time>).")
@click.option("--no-cache", is_flag=True, help="Recompute features instead of using the cache.")
@features_option
@feedback_option
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@download_option
@category_options("the number of --folds, at least 2")
@catalog_options
def train(text, image, text_field, classifier, C, fusion, folds, seed, class_weight, finetune, unfreeze,
          epochs, finetune_epochs, lr, finetune_lr, batch_size, augment, views, patience, target_precision, hierarchy, out, no_cache,
          features_store, feedback_db, no_progress, no_download, **catalog_kwargs):
    """Train a category classifier, cross-validate it, and save it for `pm predict`.

    Frozen features of --text and/or --image extractors (repeat an option to combine several)
    feed classifier heads; with --finetune the --image Keras backbone is fine-tuned with data
    augmentation instead.
    The model directory gets the model, metrics.json, folds.csv, classification_report.txt,
    confusion_matrix.png/.csv (and learning_curves.png when fine-tuning).

    \b
    Examples:
      pm train --text tfidf --image 'mobilenet:alpha=0.75' --out models/flipkart
      pm train --text tfidf --text bert --image efficientnet-lite0 --fusion mean
      pm train --text tfidf --classifier 'logreg:C=0.5' --out models/text
      pm train --image 'mobilenet:alpha=0.75' --finetune --out models/images
    """
    from placedemarche.features.cache import FeatureCache
    from placedemarche.classify import TrainConfig, train as train_model
    from placedemarche.classify.threshold import describe as describe_decision
    from placedemarche.report.training import write_training_report
    from placedemarche.classify.finetune import FineTuneConfig
    from placedemarche.core.plugins import check_specs
    from rich.markup import escape

    from placedemarche.core.errors import PlaceDeMarcheError
    from placedemarche.cli.options import choose_categories
    from placedemarche.features.extraction import features_from, store_features, store_specs
    from placedemarche.cli.options import fetch_missing_dataset, print_catalog_notes, print_store_notes
    from placedemarche.cli.render import console, err_console, progress_bars

    if features_store:
        if finetune:
            raise PlaceDeMarcheError("--finetune trains the backbone on the images themselves: "
                                     "it cannot read --features from a store")
        text, image = store_specs(features_store, text, image, text_field)
    # all problems at once, before loading data
    check_specs({"text": text, "image": image, "classifier": [classifier]})
    tuning = None
    if finetune:
        tuning = FineTuneConfig(backbone=image[0] if len(image) == 1 else "", unfreeze=unfreeze, epochs=epochs,
                                finetune_epochs=finetune_epochs, learning_rate=lr,
                                finetune_learning_rate=finetune_lr, batch_size=batch_size, augment=augment,
                                views=views, patience=patience, class_weight=class_weight, seed=seed)
    config = TrainConfig(text=list(text) or None, image=list(image) or None, text_field=text_field, classifier=classifier, C=C,
                         fusion=fusion, folds=folds, seed=seed, class_weight=class_weight, finetune=tuning,
                         target_precision=target_precision, hierarchy=hierarchy)
    config.check()
    fetch_missing_dataset(catalog_kwargs["data"], allowed=not no_download, progress=not no_progress)
    catalog = load_training_catalog(catalog_kwargs, text_field=text_field, text=bool(text), image=bool(image),
                                    feedback_db=feedback_db)
    print_catalog_notes(catalog, text_field if text else None, bool(image))
    source = None
    if features_store:
        # the extractors that learn from data are fitted on each fold's training rows instead
        catalog, source = store_features(features_store, catalog, text, image, text_field, refit_learners=True)
        print_store_notes(source, features_store)
    catalog = choose_categories(catalog, catalog_kwargs, default_min_size=max(folds, 2) if folds else 1)
    out_dir = Path(out) if out else Path("pm-results") / time.strftime("model-%Y%m%d-%H%M%S")
    with progress_bars(not no_progress), features_from(source):
        result = train_model(catalog, config, cache=None if no_cache else FeatureCache(), out=out_dir)
        write_training_report(result, out_dir)
    if result.folds:
        console.print(folds_table(result))
    summary = result.summary
    console.print(f"{len(catalog)} products, {len(result.model.categories)} categories; "
                  f"{len(catalog.dropped)} dropped; final fit {summary['final_fit_seconds']:.1f} s.",
                  highlight=False)
    if summary.get("decision"):
        console.print(f"Decision threshold: {describe_decision(summary['decision'])}.", highlight=False)
    for line in level_lines(summary):
        console.print(line, highlight=False)
    if summary.get("fusion_warning"):
        err_console.print(f"[yellow]{escape(summary['fusion_warning'])}[/]", highlight=False)
    console.print(f"Model: {out_dir}/ (predict with: pm predict --model {out_dir} --data NEW.csv)",
                  highlight=False)
    # the last line, where people look for what to open (written by write_training_report)
    console.print(f"Report: {out_dir / 'report.html'}", highlight=False, soft_wrap=True)


def level_lines(summary) -> list[str]:
    """Per level of the category tree (a model below level 1): the main group's out-of-fold
    accuracy, macro-F1 and hierarchical F1, and the decision threshold of that level."""
    levels = (summary.get("results", {}).get(summary.get("best_group") or summary.get("main")) or {}).get("levels")
    if not levels:
        return []
    thresholds = (summary.get("decision") or {}).get("levels") or {}
    lines = []
    for level, scores in levels.items():
        point = thresholds.get(level) or {}
        decided = (f"; threshold {point['threshold']:.3f} accepts {point['coverage']:.0%}"
                   if point.get("precision") is not None else "")
        lines.append(f"Level {level} ({scores['categories']} categories): accuracy {scores['accuracy']:.3f}, "
                     f"macro-F1 {scores['macro_f1']:.3f}, hF {scores['hF']:.3f}{decided}")
    stopped = (summary.get("decision") or {}).get("stopped")
    if stopped:
        lines.append(f"Paths stopped at the level thresholds: hP {stopped['hP']:.3f}, hR {stopped['hR']:.3f}, "
                     f"hF {stopped['hF']:.3f}")
    return lines


def folds_table(result):
    from rich.table import Table

    names = list(result.summary["results"])
    table = Table(title=f"{len(result.folds)}-fold stratified cross-validation (accuracy / macro-F1)")
    table.add_column("fold", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("train s", justify="right")
    for fold in result.folds:
        table.add_row(str(fold["fold"]),
                      *[f"{fold[f'{n}:accuracy']:.3f} / {fold[f'{n}:macro_f1']:.3f}" for n in names],
                      f"{fold['seconds']:.1f}")
    res = result.summary["results"]
    table.add_row("mean ± sd", *[f"{res[n]['accuracy_mean']:.3f} ± {res[n]['accuracy_sd']:.3f} / "
                                 f"{res[n]['macro_f1_mean']:.3f} ± {res[n]['macro_f1_sd']:.3f}" for n in names],
                  f"{result.summary['fold_seconds_mean']:.1f}", style="bold")
    return table


@click.command("predict")
@click.option("--model", "model_dir", required=True, type=click.Path(),
              help="Model directory from pm train. Its model.skops loads without running code; a model.joblib "
                   "(third-party plugins, older models) is a pickle: loading it runs code, so use only models you "
                   "trust (a checksum in model.json catches damaged or swapped files).")
@click.option("--data", required=True, type=click.Path(), help="Catalogue CSV (or a directory holding one).")
@click.option("--out", type=click.Path(dir_okay=False), default="predictions.csv", show_default=True,
              help="Predictions CSV to write.")
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Also write the next K-1 categories and their probabilities.")
@click.option("--id-column", help="Column holding product ids.")
@click.option("--name-column", help="Column holding product names.")
@click.option("--description-column", help="Column holding descriptions.")
@click.option("--image-column", help="Column holding image file names.")
@click.option("--label-column", help="Column holding the true category (optional: accuracy is reported).")
@click.option("--image-dir", type=click.Path(file_okay=False),
              help="Directory of the images (default: images/ or Images/ beside the CSV).")
@click.option("--group", metavar="GROUP",
              help="Modalities that predict: text, image or text+image (default: the model's, the best in "
                   "its cross-validation). Products lacking them are predicted from what they have.")
@click.option("--no-cache", is_flag=True, help="Do not use the feature cache.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def predict(model_dir, data, out, top_k, id_column, name_column, description_column, image_column,
            label_column, image_dir, group, no_cache, no_progress):
    """Predict the category of each product of a catalogue with a trained model.

    Products missing their image or their text are predicted from the modality they have;
    products with neither are kept in the CSV with an empty category and a note. When the
    fused model scored below text (or image) alone in cross-validation, that group predicts
    unless --group says otherwise.

    A model directory with a model.joblib holds a pickle: loading it runs code. Use only
    models you trust (model.skops, saved for built-in plugins, runs no code).

    \b
    Example:
      pm predict --model models/flipkart --data new.csv --out predictions.csv --top-k 3
    """
    from rich.markup import escape

    from placedemarche.features.cache import FeatureCache
    from placedemarche.data.catalog import load_catalog
    from placedemarche.classify import load_model, predict_catalog
    from placedemarche.cli.render import console, err_console, progress_bars

    model = load_model(model_dir)
    model.resolve_group(group)  # an unknown --group fails before the catalogue is read
    catalog = load_catalog(data, id_column=id_column, name_column=name_column,
                           description_column=description_column, image_column=image_column,
                           label_column=label_column, image_dir=image_dir)
    with progress_bars(not no_progress):
        result = predict_catalog(model, catalog, top_k=top_k, cache=None if no_cache else FeatureCache(),
                                 out=out, group=group)
    if result.many_images_missing:
        hint = "pass --image-dir DIR" if image_dir is None else "check --image-dir"
        err_console.print(f"[yellow]{result.missing_images} of {len(result.rows)} products' image files were not "
                          f"found in {escape(str(result.missing_image_dir))}:[/] they were predicted without their image "
                          f"(see the note column); {hint} if the images are elsewhere", highlight=False,
                          soft_wrap=True)
    fused = list(model.config.groups)[-1]
    if group is None and result.group != fused:
        err_console.print(f"predicting with {result.group}, the model's best group in cross-validation "
                          f"(--group {fused} to use the fused model)", highlight=False, soft_wrap=True)
    used = ", ".join(f"{k}: {v}" for k, v in sorted(result.counts.items()))
    console.print(f"{len(result.rows)} products predicted ({used}) -> {out}", highlight=False)
    if "level" in result.columns:
        depths = [row["level"] for row in result.rows if row["category"]]
        console.print("paths answered down to the level their threshold allows: "
                      + ", ".join(f"level {k}: {depths.count(k)}" for k in sorted(set(depths))), highlight=False)
    if result.counts.get("none"):
        err_console.print(f"[yellow]{result.counts['none']} product(s) have neither a usable text nor "
                          "image:[/] kept with an empty category (see the note column)", highlight=False)
    if result.accuracy is not None:
        console.print(f"accuracy against the catalogue's categories: {result.accuracy:.3f}", highlight=False)
