"""Options shared by the commands that read a catalogue (`--data` and column choices)."""

from __future__ import annotations


import click


def catalog_options(func):
    """Add --data, column overrides, --image-dir and --on-missing to a command."""
    options = [
        click.option("--data", "data", metavar="PATH|NAME",
                     help="Catalogue CSV or Parquet file, a directory holding one, or a dataset name "
                          "(default: the Flipkart sample in the data home)."),
        click.option("--id-column", help="Column holding product ids."),
        click.option("--name-column", help="Column holding product names."),
        click.option("--description-column", help="Column holding descriptions."),
        click.option("--image-column", help="Column holding image file names."),
        click.option("--label-column", multiple=True,
                     help="Column holding the true category; repeat it for one column per level of a "
                          "category tree, top level first."),
        click.option("--category-separator", metavar="SEP",
                     help="The category column holds paths such as 'A / B / C': the characters between "
                          "levels (a product_category_tree is read as Flipkart's 'A >> B' without it)."),
        click.option("--image-dir", type=click.Path(file_okay=False),
                     help="Directory of the images (default: images/ or Images/ beside the CSV)."),
        click.option("--on-missing", type=click.Choice(["drop", "fail"]), default="drop",
                     show_default=True,
                     help="What to do with products lacking a usable text or image."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def extractor_options(func):
    """Add --text, --image (repeatable plugin specs) and --text-field to a command."""
    options = [
        click.option("--text", "text", multiple=True, metavar="SPEC",
                     help="Text extractor, e.g. tfidf, 'tfidf:max_df=0.5' or bert (see pm list-extractors); "
                          "repeatable."),
        click.option("--image", "image", multiple=True, metavar="SPEC",
                     help="Image extractor, e.g. efficientnet-lite0, sift or 'mobilenet:alpha=0.75'; repeatable."),
        click.option("--text-field", type=click.Choice(["name", "description", "both"]), default="both",
                     show_default=True, help="Which product text the text extractors read."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def download_option(func):
    """Add --no-download (commands that fetch a missing dataset: pm evaluate, pm train)."""
    return click.option(
        "--no-download", is_flag=True,
        help="Fail instead of downloading the dataset --data names (the Flipkart sample without "
             "--data) when it is missing from the data home; PM_NO_DOWNLOAD=1 does the same.")(func)


def fetch_missing_dataset(data, *, allowed: bool, progress: bool = True) -> None:
    """Download the dataset ``--data`` names (the default one without it) when it is missing
    from the data home and downloads are ``allowed`` (and PM_NO_DOWNLOAD does not forbid
    them), saying so in one line: pm evaluate and pm train then run on a fresh machine."""
    from placedemarche.data.datasets import data_home, dataset_to_fetch, fetch_dataset
    from placedemarche.cli.render import err_console, progress_bars

    name = dataset_to_fetch(data, allowed=allowed)
    if name is None:
        return
    err_console.print(f"{name}: not in the data home {data_home()}, downloading it (checked against its "
                      "sha256; run again to resume if interrupted; --no-download to forbid)",
                      highlight=False, markup=False, soft_wrap=True)
    with progress_bars(progress):
        fetch_dataset(name)


def load_unvalidated_catalog(kwargs: dict, *, labels: bool, keep_urls: bool = False):
    """Load the catalogue named by :func:`catalog_options` values (``--on-missing`` is left in
    ``kwargs``): nothing dropped yet; image URLs kept as they are with ``keep_urls``."""
    from placedemarche.data.catalog import load_catalog
    from placedemarche.data.datasets import resolve_data

    return load_catalog(
        resolve_data(kwargs.pop("data")),
        id_column=kwargs.pop("id_column"), name_column=kwargs.pop("name_column"),
        description_column=kwargs.pop("description_column"),
        image_column=kwargs.pop("image_column"), label_column=kwargs.pop("label_column") or None,
        category_separator=kwargs.pop("category_separator", None),
        image_dir=kwargs.pop("image_dir"), require_labels=labels, keep_urls=keep_urls,
    )


def category_options(default_min_size: str):
    """Add --category-level, --min-category-size and --merge-rare to a command whose categories
    are a tree's level (pm train, pm evaluate, pm audit); ``default_min_size`` says the default
    in the help. Apply them with :func:`choose_categories`."""
    def decorate(func):
        options = [
            click.option("--category-level", type=click.IntRange(min=1), default=1, show_default=True,
                         help="Level of the category tree to use (1: the top level); products whose path "
                              "is shorter are kept at their deepest level."),
            click.option("--min-category-size", type=click.IntRange(min=1), metavar="N",
                         help=f"Categories with fewer products are left out, with a note (default: {default_min_size})."),
            click.option("--merge-rare", is_flag=True,
                         help="Merge categories smaller than --min-category-size into their parent level "
                              "instead of leaving them out."),
        ]
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


def choose_categories(catalog, kwargs: dict, *, default_min_size: int):
    """The catalogue at ``--category-level`` without the categories too small (or merged, with
    ``--merge-rare``); says on stderr what was left out. Pops the :func:`category_options`."""
    from rich.markup import escape

    from placedemarche.cli.render import err_console
    from placedemarche.data.categories import at_level, category_note

    chosen = at_level(catalog, kwargs.pop("category_level", 1),
                      min_size=kwargs.pop("min_category_size", None) or default_min_size,
                      merge_rare=kwargs.pop("merge_rare", False))
    note = category_note(chosen.category_info)
    if note:
        err_console.print(f"[yellow]categories:[/] {escape(note)}", highlight=False, soft_wrap=True)
    return chosen


def load_catalog_from_options(kwargs: dict, *, text: bool, image: bool, labels: bool):
    """Load and validate the catalogue named by :func:`catalog_options` values."""
    catalog = load_unvalidated_catalog(kwargs, labels=labels)
    return catalog.validated(text=kwargs.pop("text_field", "both") if text else None,
                             image=image, labels=labels, on_missing=kwargs.pop("on_missing"))


def print_catalog_notes(catalog, text_field, image: bool) -> None:
    """Say which columns feed the features, warn about a missing text column, list drops."""
    from rich.markup import escape

    from placedemarche.data.catalog import summarise_problems
    from placedemarche.cli.render import err_console

    used = []
    if text_field:
        used.append(f"text from {', '.join(catalog.text_columns(text_field)) or 'no column'}")
        warning = catalog.text_column_warning(text_field)
        if warning:
            err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if image:
        used.append(f"images from column {catalog.columns.get('image')}")
    if used and catalog.columns:
        err_console.print(escape(f"{catalog.source}: {'; '.join(used)}"
                                 f"; category from column "
                                 f"{', '.join(catalog.category_info.get('columns') or [str(catalog.columns.get('label'))])}"),
                          highlight=False)
    if catalog.dropped:
        err_console.print(f"[yellow]dropped {len(catalog.dropped)} product(s)[/] "
                          f"({escape(summarise_problems(catalog.dropped))}): "
                          + escape("; ".join(str(p) for p in catalog.dropped[:3])
                                   + (" ..." if len(catalog.dropped) > 3 else "")), highlight=False)


def features_option(func):
    """Add --features STORE (read features from a feature store written by pm extract)."""
    return click.option(
        "--features", "features_store", type=click.Path(file_okay=False), metavar="STORE",
        help="Read the features from this feature store (written by pm extract) instead of "
             "computing them; without --text/--image, use every set in it.")(func)


def print_store_notes(source, store_path) -> None:
    """Say where each set was read from, which were refitted instead, and what was dropped
    (see features.extraction.store_features)."""
    from rich.markup import escape

    from placedemarche.cli.render import err_console

    for _, spec in source.refit:
        err_console.print(escape(f"{spec}: learns from data, fitted on each fold's training rows "
                                 "from the catalogue (not read from the store)"), highlight=False)
    for (kind, spec), found in source.sets.items():
        err_console.print(escape(f"{spec}: {kind} features from {found.path}"), highlight=False)
    if source.dropped:
        shown = ", ".join(source.dropped[:5]) + (" ..." if len(source.dropped) > 5 else "")
        err_console.print(f"[yellow]dropped {len(source.dropped)} product(s) without a feature row in "
                          f"{escape(str(store_path))}[/] (failed or not extracted; see each set's "
                          f"manifest.json): {escape(shown)}", highlight=False)
