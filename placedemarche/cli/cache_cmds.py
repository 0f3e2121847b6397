"""`pm cache info` and `pm cache clear`: the feature cache on disk."""

from __future__ import annotations

import click


@click.group("cache")
def cache():
    """Inspect or clear the feature cache (PM_CACHE_DIR)."""


@cache.command("info")
def cache_info():
    """Show where the feature cache is and how much it holds."""
    from ..core.cache import FeatureCache
    from .render import console

    info = FeatureCache().info()
    console.print(f"{info.path}: {info.entries} feature file(s), {info.bytes / 1e6:.1f} MB", highlight=False)


@cache.command("clear")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(yes):
    """Delete every cached feature matrix (they are recomputed when needed)."""
    from ..core.cache import FeatureCache
    from .render import console

    store = FeatureCache()
    info = store.info()
    if not info.entries:
        console.print(f"{info.path}: nothing to clear", highlight=False)
        return
    if not yes:
        click.confirm(f"Delete {info.entries} cached feature file(s) ({info.bytes / 1e6:.1f} MB) "
                      f"in {info.path}?", abort=True)
    cleared = store.clear()
    console.print(f"cleared {cleared.entries} feature file(s), {cleared.bytes / 1e6:.1f} MB", highlight=False)
