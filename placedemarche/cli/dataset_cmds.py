"""`pm dataset`: download known datasets into the data home, list them, print their path."""

from __future__ import annotations

import click


@click.group("dataset")
def dataset():
    """Download and locate datasets (data home: PM_DATA_HOME)."""


@dataset.command("download")
@click.argument("name")
@click.option("--url", help="Archive location to use instead of the official one "
                            "(mirror URL, file:// URL or local .zip path).")
@click.option("--force", is_flag=True, help="Download again even if the dataset is present.")
@click.option("--data-home", type=click.Path(file_okay=False), help="Data home (default: PM_DATA_HOME).")
def download(name, url, force, data_home):
    """Download, verify and unpack dataset NAME (e.g. flipkart)."""
    from pathlib import Path

    from ..core.datasets import download_dataset
    from .render import console, progress_bars

    with progress_bars():
        path = download_dataset(name, url=url, force=force,
                                home=Path(data_home) if data_home else None)
    console.print(f"{name}: ready in {path}", highlight=False)


@dataset.command("list")
def list_datasets():
    """List known datasets and whether they are in the data home."""
    from rich.table import Table

    from ..core.datasets import DATASETS, data_home, dataset_path
    from .render import console

    table = Table(title=f"Datasets (data home: {data_home()})")
    for column in ("name", "description", "status"):
        table.add_column(column)
    for name, ds in DATASETS.items():
        path = dataset_path(name)
        table.add_row(name, ds.description,
                      f"[green]{path}[/]" if path else f"[yellow]pm dataset download {name}[/]")
    console.print(table)


@dataset.command("path")
@click.argument("name")
def path(name):
    """Print the directory of dataset NAME (fails if it is not downloaded)."""
    from ..core.datasets import resolve_data

    click.echo(str(resolve_data(name)))
