"""The data stage's commands: `pm dataset` (known datasets in the data home) and `pm source`
(collect products from public APIs)."""

from __future__ import annotations

import click


# -- `pm dataset`: download known datasets into the data home, list them, print their path ---

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


# -- `pm source list` and `pm source run`: collect new products from public APIs --------

@click.group("source")
def source():
    """Collect products from public APIs (Open Food Facts, Edamam, plugins)."""


@source.command("list")
def list_sources():
    """List the available sources."""
    from rich.table import Table

    from placedemarche.core.plugins import available_plugins
    from placedemarche.cli.render import console

    table = Table(title="Sources")
    for column in ("name", "description", "options (--option KEY=VALUE)", "provider"):
        table.add_column(column)
    for name, entry in sorted(available_plugins("source").items()):
        cls = entry.cls
        aliases = f" ({', '.join(cls.aliases)})" if cls.aliases else ""
        table.add_row(name + aliases, cls.description, ", ".join(cls._get_param_names()), entry.provider)
    console.print(table)


@source.command("run")
@click.argument("name")
@click.option("--q", "query", required=True, help="Search query, e.g. champagne.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many products.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), required=True,
              help="Output file: .csv, or .jsonl for JSON lines.")
@click.option("--fields", help="Comma-separated output columns "
                               "(default: foodId,label,category,foodContentsLabel,image).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]),
              help="Output format (default: from the suffix of --out; .jsonl is JSON lines).")
@click.option("--images", "images_dir", type=click.Path(file_okay=False),
              help="Download product images into this directory (the CSV then is a catalogue).")
@click.option("--image-workers", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images downloaded at once.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run into the same file.")
@click.option("--base-url", help="API base URL (another instance or a mirror).")
@click.option("--user-agent", help="User-Agent sent to the API: 'app/version (contact)'.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Other source parameter, e.g. --option app_id=... (repeatable).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def run(name, query, limit, out, fields, fmt, images_dir, image_workers, resume, base_url, user_agent, options, no_progress):
    """Query source NAME and write the products found to --out.

    \b
    Example:
      pm source run openfoodfacts --q champagne --limit 10 -o champagne.csv --images images/
    """
    from rich.markup import escape

    from placedemarche.data.collect import collect
    from placedemarche.core.plugins import create_plugin, parse_plugin_spec
    from placedemarche.cli.render import console, err_console, progress_bars

    params = parse_plugin_spec("x:" + ",".join(options))[1] if options else {}
    if base_url:
        params["base_url"] = base_url
    if user_agent:
        params["user_agent"] = user_agent
    plugin = create_plugin("source", name, **params)
    columns = [f.strip() for f in fields.split(",") if f.strip()] if fields else None

    def show_retry(notice):  # above the progress bars, and with --no-progress too
        err_console.print(f"[yellow]{escape(str(notice))}[/]", highlight=False, soft_wrap=True)

    with progress_bars(not no_progress):
        summary = collect(plugin, query, out, limit=limit, fields=columns, fmt=fmt, resume=resume,
                          images_dir=images_dir, image_workers=image_workers, on_retry=show_retry)
    console.print(_summary_line(summary, bool(images_dir)), highlight=False)
    for skipped in summary.skipped_images[:10]:
        err_console.print(f"[yellow]skipped image[/] {escape(skipped)}", highlight=False)
    if len(summary.skipped_images) > 10:
        err_console.print(f"[yellow]... and {len(summary.skipped_images) - 10} more skipped image(s)[/]",
                          highlight=False)


def _summary_line(summary, images: bool) -> str:
    parts = [f"{summary.pages} page(s)",
             f"{summary.retries} retr{'y' if summary.retries == 1 else 'ies'}"]
    if summary.waited:
        parts.append(f"{summary.waited:.0f} s waited (rate limit, backoff)")
    if summary.duplicates:
        parts.append(f"{summary.duplicates} duplicate(s) skipped")
    if images:
        parts.append(f"{summary.images} image(s), {len(summary.skipped_images)} image(s) skipped")
    resumed = f" (resumed at page {summary.resumed_from_page})" if summary.resumed_from_page > 1 else ""
    return f"{summary.products} product(s) written to {summary.out}{resumed}: " + ", ".join(parts)
