"""Options shared by the commands that read a catalogue (`--data` and column choices)."""

from __future__ import annotations

import functools

import click


def catalog_options(func):
    """Add --data, column overrides, --image-dir and --on-missing to a command."""
    options = [
        click.option("--data", "data", metavar="PATH|NAME",
                     help="Catalogue CSV, a directory holding one, or a dataset name "
                          "(default: the Flipkart sample in the data home)."),
        click.option("--id-column", help="Column holding product ids."),
        click.option("--name-column", help="Column holding product names."),
        click.option("--description-column", help="Column holding descriptions."),
        click.option("--image-column", help="Column holding image file names."),
        click.option("--label-column", help="Column holding the true category."),
        click.option("--image-dir", type=click.Path(file_okay=False),
                     help="Directory of the images (default: images/ or Images/ beside the CSV)."),
        click.option("--on-missing", type=click.Choice(["drop", "fail"]), default="drop",
                     show_default=True,
                     help="What to do with products lacking a usable text or image."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def load_catalog_from_options(kwargs: dict, *, text: bool, image: bool, labels: bool):
    """Load and validate the catalogue named by :func:`catalog_options` values."""
    from ..core.catalog import load_catalog
    from ..core.datasets import resolve_data

    catalog = load_catalog(
        resolve_data(kwargs.pop("data")),
        id_column=kwargs.pop("id_column"), name_column=kwargs.pop("name_column"),
        description_column=kwargs.pop("description_column"),
        image_column=kwargs.pop("image_column"), label_column=kwargs.pop("label_column"),
        image_dir=kwargs.pop("image_dir"), require_labels=labels,
    )
    return catalog.validated(text=kwargs.pop("text_field", "both") if text else None,
                             image=image, labels=labels, on_missing=kwargs.pop("on_missing"))


def print_catalog_notes(catalog, text_field, image: bool) -> None:
    """Say which columns feed the features, warn about a missing text column, list drops."""
    from rich.markup import escape

    from ..core.catalog import summarise_problems
    from .render import err_console

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
                                 f"; category from column {catalog.columns.get('label')}"), highlight=False)
    if catalog.dropped:
        err_console.print(f"[yellow]dropped {len(catalog.dropped)} product(s)[/] "
                          f"({escape(summarise_problems(catalog.dropped))}): "
                          + escape("; ".join(str(p) for p in catalog.dropped[:3])
                                   + (" ..." if len(catalog.dropped) > 3 else "")), highlight=False)
