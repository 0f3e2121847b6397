"""`pm cache info` and `pm cache clear`: the feature cache on disk."""

from __future__ import annotations

import click


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
