"""`pm feedback export`: the categories people chose in the service (pm serve --db), as a CSV file."""

from __future__ import annotations

import click


@click.group("feedback")
def feedback():
    """Read the feedback and answer log that pm serve --db records."""


@feedback.command("export")
@click.argument("db", metavar="DB")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="CSV file to write.")
@click.option("--history", "rows", flag_value="history",
              help="Every feedback row in the order given, not only the latest per product.")
@click.option("--answers", "rows", flag_value="answers",
              help="The log of the answers the service gave instead of the feedback.")
def feedback_export(db, out, rows):
    """Write the feedback of DB (an SQLite file or a database URL, as given to pm serve --db) to a CSV.

    By default one row per product id: the category a person chose last for it. Columns: id,
    product_id, category, model_id, name, description, photo_ref, created (UTC).

    \b
    Examples:
      pm feedback export service.db -o feedback.csv
      pm feedback export postgresql://pm@db.internal/pm -o feedback.csv --history
      pm train --text tfidf --feedback service.db --out models/m2
    """
    from placedemarche.cli.render import console
    from placedemarche.serve.db import open_db

    what = rows or "latest"
    with open_db(db, create=False) as service_db:
        written = service_db.export_csv(out, rows=what)
        label = service_db.label
    kind = {"latest": "products' latest feedback", "history": "feedback rows", "answers": "answers"}[what]
    console.print(f"{written} {kind} from {label} -> {out}", highlight=False, soft_wrap=True)


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
