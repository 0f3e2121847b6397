"""`pm dataset`: download known datasets into the data home, list them, print their path."""

from __future__ import annotations

import click

_data_home_option = click.option(
    "--data-home", type=click.Path(file_okay=False),
    help="Data home to use (default: PM_DATA_HOME, else <user cache>/placedemarche/data).")


@click.group("dataset")
def dataset():
    """Download and locate datasets in the data home (PM_DATA_HOME)."""


@dataset.command("download")
@click.argument("name")
@click.option("--url", metavar="URL|PATH",
              help="Archive to use instead of the official one: a local .zip path or file:// URL "
                   "(an offline copy), or a mirror URL.")
@click.option("--force", is_flag=True, help="Download and unpack again even if the dataset is present.")
@_data_home_option
def download(name, url, force, data_home):
    """Download, verify (sha256) and unpack dataset NAME (e.g. flipkart).

    An interrupted download is resumed by running the same command again.
    """
    from placedemarche.data.datasets import dataset_path, download_dataset
    from placedemarche.cli.render import console, err_console, progress_bars

    present = None if force else dataset_path(name, data_home)
    if present is not None:
        console.print(f"{name}: already in {present} (--force to download again)", highlight=False)
        return
    try:
        with progress_bars():
            path = download_dataset(name, url=url, force=force, home=data_home)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted:[/] the partial download is kept; run the same "
                          "command again to resume", highlight=False)
        raise SystemExit(130) from None
    console.print(f"{name}: verified and unpacked into {path}", highlight=False)


@dataset.command("list")
@_data_home_option
def list_datasets(data_home):
    """List known datasets, whether each is in the data home, and where."""
    from rich.table import Table

    from placedemarche.data.datasets import DATASETS, data_home as default_home, dataset_path
    from placedemarche.cli.render import console

    table = Table(title=f"Datasets (data home: {data_home or default_home()})")
    for column in ("name", "description", "present", "path"):
        table.add_column(column)
    for name, ds in DATASETS.items():
        path = dataset_path(name, data_home)
        table.add_row(name, ds.description, "[green]yes[/]" if path else "[yellow]no[/]",
                      str(path) if path else f"run: pm dataset download {name}")
    console.print(table)


@dataset.command("path")
@click.argument("name")
@_data_home_option
def path(name, data_home):
    """Print the directory of dataset NAME in the data home (fails if it is not downloaded)."""
    from placedemarche.data.datasets import DatasetError, data_home as default_home, dataset_path

    found = dataset_path(name, data_home)
    if found is None:
        raise DatasetError(f"dataset '{name}' is not in the data home {data_home or default_home()}: "
                           f"run `pm dataset download {name}`")
    click.echo(str(found))
