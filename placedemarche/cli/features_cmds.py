"""The features stage's commands: `pm extract` (a catalogue's features into a feature store,
locally or on Ray) and `pm cache` (the content-addressed feature cache on disk)."""

from __future__ import annotations

import click

from placedemarche.cli.options import catalog_options, extractor_options


# -- `pm extract`: compute a catalogue's features into a feature store, locally or on Ray ---

def _runtime_env(ctx, param, value: str | None) -> dict | None:
    """``--runtime-env``'s JSON text as a dict (a one-line usage error when it is not an object)."""
    import json

    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"expected a JSON object such as '{{\"pip\": [\"my-plugin\"]}}', "
                                 f"got {type(parsed).__name__}")
    return parsed


@click.command("extract")
@extractor_options
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), metavar="STORE",
              help="Feature store directory (created if needed; a set already there is resumed).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: a Ray Data actor pool on this machine or a cluster.")
@click.option("--address", metavar="ADDRESS",
              help="Ray cluster to join ('auto', 'ray://host:10001'; default: RAY_ADDRESS, else a "
                   "local Ray on this machine's CPUs). --engine ray only.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Rows per batch handed to the extractor (memory grows with it).")
@click.option("--shard-rows", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Rows per Parquet shard: the unit written at once and resumed after an interruption.")
@click.option("--concurrency", type=click.IntRange(min=1),
              help="Ray actors, each with its own plugin instance (--engine ray only).")
@click.option("--num-gpus-per-worker", type=click.FloatRange(min=0),
              help="GPUs per Ray actor, e.g. 0.5 for two actors per GPU (--engine ray only).")
@click.option("--threads-per-worker", type=click.IntRange(min=1), metavar="N",
              help="CPUs reserved per Ray actor, and its inference/decoding threads (default 1; "
                   "--engine ray only).")
@click.option("--runtime-env", "runtime_env", metavar="JSON", callback=_runtime_env,
              help="""Ray runtime environment of the workers, e.g. '{"pip": ["my-plugin"]}' to install a """
                   "third-party plugin there (--engine ray only; docs/scale.md).")
@click.option("--fit-sample", type=click.IntRange(min=1), metavar="N",
              help="Fit extractors that learn from data (tfidf, bow, word2vec, sift) on N random "
                   "rows instead of all (recorded in the manifest).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --fit-sample draw.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@catalog_options
def extract(text, image, text_field, out, engine, address, batch_size, shard_rows, concurrency,
            num_gpus_per_worker, threads_per_worker, runtime_env, fit_sample, seed, no_progress, **catalog_kwargs):
    """Compute features into a feature store (Parquet shards + manifest per extractor).

    Memory stays bounded by --batch-size and --shard-rows whatever the catalogue size; each
    shard is written as soon as it is complete, so an interrupted run, run again, computes
    only the missing shards. Products whose image cannot be read get no feature row and are
    listed in the manifest. Analyse the store with `pm evaluate --features STORE` or
    `pm train --features STORE`.

    \b
    Examples:
      pm extract --text tfidf --image efficientnet-lite0 --data catalogue.parquet --out features/
      pm extract --image efficientnet-lite0 --data big.csv --out features/ --engine ray --concurrency 4
      pm extract --image efficientnet-lite0 --data big.csv --out features/ --engine ray --address auto \\
        --threads-per-worker 2 --runtime-env '{"pip": ["placedemarche"]}'
    """
    from rich.markup import escape

    from placedemarche.features.driver import catalogs_to_extract, extract_to_store, get_engine
    from placedemarche.core.errors import PlaceDeMarcheError
    from placedemarche.core.plugins import check_specs
    from placedemarche.features.store import FeatureStore
    from placedemarche.cli.options import load_unvalidated_catalog, print_catalog_notes
    from placedemarche.cli.render import console, err_console, progress_bars

    if not text and not image:
        raise PlaceDeMarcheError("nothing to extract: give --text and/or --image (see pm list-extractors)")
    check_specs({"text": text, "image": image})
    on_missing = catalog_kwargs.pop("on_missing")
    # image URLs (s3://, gs://, https://) go to the extractors as they are
    catalog = load_unvalidated_catalog(catalog_kwargs, labels=False, keep_urls=True)
    # every check before any work: the catalogue for each modality, the store, the engine
    texts, images = catalogs_to_extract(catalog, text_field=text_field if text else None, image=bool(image),
                                        on_missing=on_missing)
    if texts is not None:
        print_catalog_notes(texts, text_field, False)
    store = FeatureStore(out, create=True)
    # one engine for every set (a Ray cluster is joined once)
    runner = get_engine(engine, **_engine_options(engine, address=address, concurrency=concurrency,
                                                  num_gpus_per_worker=num_gpus_per_worker,
                                                  threads_per_worker=threads_per_worker, runtime_env=runtime_env))
    options = {"engine": runner, "batch_size": batch_size, "shard_rows": shard_rows, "fit_sample": fit_sample,
               "seed": seed}
    results = []
    try:
        with progress_bars(not no_progress):
            if texts is not None:
                results += extract_to_store(texts, text, (), store, text_field=text_field, **options)
            if images is not None:
                results += extract_to_store(images, (), image, store, **options)
    except KeyboardInterrupt:
        err_console.print(f"finished shards are kept in {escape(out)}: run the same command again to "
                          "compute only the others", highlight=False)
        raise
    finally:
        runner.close()
    console.print(summary_table(results))
    for done in results:
        if done.failed:
            shown = "; ".join(f"{row['id']}: {row['reason']}" for row in done.failed[:3])
            more = f" and {len(done.failed) - 3} more" if len(done.failed) > 3 else ""
            err_console.print(f"[yellow]{escape(done.spec)}: {len(done.failed)} product(s) without features[/] "
                              f"({escape(shown)}{more}; all in {escape(str(done.path / 'manifest.json'))})",
                              highlight=False)
    console.print(f"Store: {out} (analyse with: pm evaluate --features {out} --data ...)",
                  highlight=False, markup=False, soft_wrap=True)


def _engine_options(engine: str, **options) -> dict:
    """Options for the engine; the local engine is given none (it refuses the ray ones given)."""
    return options if engine == "ray" else {k: v for k, v in options.items() if v is not None}



def summary_table(results):
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Feature sets")
    for column, justify in (("set", "left"), ("kind", "left"), ("rows", "right"), ("features", "right"),
                            ("failed", "right"), ("dims", "right"), ("storage", "left"),
                            ("shards new/reused", "right"), ("seconds", "right"), ("directory", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for done in results:
        table.add_row(Text(done.spec), done.kind, f"{done.rows:,}", f"{done.features:,}", f"{len(done.failed):,}",
                      str(done.dims or "-"), done.storage or "-",
                      f"{done.shards_written}/{done.shards_reused}", f"{done.seconds:.1f}", Text(done.path.name))
    return table


# -- `pm cache info` and `pm cache clear`: the feature cache on disk --------------------

def _contents(info) -> str:
    return f"{info.feature_sets} feature set(s), {info.array_files} array file(s)"


@click.group("cache")
def cache():
    """Inspect or clear the feature cache (PM_CACHE_DIR)."""


@cache.command("info")
def cache_info():
    """Show where the feature cache is, how much it holds and how much of it is damaged.

    Feature matrices are feature sets (Parquet shards + manifest, as pm extract writes);
    t-SNE maps, cluster labels and matrices cached by older versions are .npy/.npz files.
    Every checksum is verified.
    """
    from placedemarche.features.cache import FeatureCache
    from placedemarche.cli.render import console

    info = FeatureCache().info(verify=True)
    line = f"{info.path}: {_contents(info)}, {info.bytes / 1e6:.1f} MB"
    if info.damaged:
        line += f"; {info.damaged} damaged or from an older version (recomputed when next needed)"
    if info.temp_files:
        line += (f"; {info.temp_files} temporary file(s) left by interrupted writes"
                 " (pm cache clear removes them)")
    console.print(line, highlight=False)


@cache.command("clear")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(yes):
    """Delete every cached feature set and array (they are recomputed when needed)."""
    from placedemarche.features.cache import FeatureCache
    from placedemarche.cli.render import console

    store = FeatureCache()
    info = store.info()
    if not info.entries and not info.temp_files:
        console.print(f"{info.path}: nothing to clear", highlight=False)
        return
    what = f"{_contents(info)} and {info.temp_files} temporary file(s)"
    if not yes:
        click.confirm(f"Delete {what} ({info.bytes / 1e6:.1f} MB) in {info.path}?", abort=True)
    store.clear()
    console.print(f"cleared {what}, {info.bytes / 1e6:.1f} MB", highlight=False)
