"""`pm list [KIND]` (and its aliases `pm list-extractors`, `pm list-reducers`), `pm plugins`:
what is installed and usable."""

from __future__ import annotations

import json

import click


def _plugin_rows(kinds: tuple[str, ...]) -> list[dict]:
    from placedemarche.core.plugins import available_plugins

    rows = []
    for kind in kinds:
        for name, entry in sorted(available_plugins(kind).items()):
            cls = entry.cls
            missing = cls.missing_dependencies()
            rows.append({
                "name": name,
                "kind": kind,
                "aliases": list(cls.aliases),
                "description": cls.description,
                "provider": entry.provider,
                "available": not missing,
                "install": cls.install_hint() if missing else "",
            })
    return rows


def _render_plugins(rows: list[dict], title: str) -> None:
    from rich.table import Table
    from rich.text import Text

    from placedemarche.cli.render import console

    table = Table(title=title)
    for column in ("name", "modality" if rows and rows[0]["kind"] != "reducer" else "kind",
                   "description", "provider", "status"):
        table.add_column(column)
    for row in rows:
        name = row["name"] + (f" ({', '.join(row['aliases'])})" if row["aliases"] else "")
        # Text, not markup: hints read `pip install "placedemarche[torch]"`, and plugin
        # names and descriptions come from third-party packages.
        status = Text("available", style="green") if row["available"] else Text(row["install"], style="yellow")
        table.add_row(Text(name), row["kind"], Text(row["description"]), Text(row["provider"]), status)
    console.print(table)
    _print_failure_hint()


def _kind_title(kind: str) -> str:
    from placedemarche.core.plugins import KINDS

    return KINDS[kind][1].capitalize() + "s"  # "Text extractors", "Classifier heads"


def _render_by_kind(rows: list[dict], kinds: tuple[str, ...]) -> None:
    """One table per kind, in the order of ``kinds``; a kind nothing registers says so."""
    from rich.table import Table
    from rich.text import Text

    from placedemarche.cli.render import console

    for kind in kinds:
        of_kind = [row for row in rows if row["kind"] == kind]
        table = Table(title=_kind_title(kind),
                      caption=None if of_kind else f"no {_kind_title(kind).lower()} registered")
        for column in ("name", "description", "provider", "status"):
            table.add_column(column)
        for row in of_kind:
            name = row["name"] + (f" ({', '.join(row['aliases'])})" if row["aliases"] else "")
            status = Text("available", style="green") if row["available"] else Text(row["install"], style="yellow")
            table.add_row(Text(name), Text(row["description"]), Text(row["provider"]), status)
        console.print(table)
    _print_failure_hint()


def _print_failure_hint() -> None:
    from rich.markup import escape

    from placedemarche.core.plugins import plugin_failures
    from placedemarche.cli.render import err_console

    failures = plugin_failures()
    if failures:
        err_console.print(
            f"[yellow]{len(failures)} plugin(s) failed to load:[/] "
            + escape(", ".join(f.plugin for f in failures)) + " (details: pm plugins)", highlight=False)


def _parse_kind(kind: str) -> str:
    """The kind named on the command line; plurals are accepted (`pm list reducers`)."""
    from placedemarche.core.errors import UnknownPluginError
    from placedemarche.core.plugins import KINDS

    for candidate in (kind, kind[:-1] if kind.endswith("s") else kind):
        if candidate in KINDS:
            return candidate
    raise UnknownPluginError(f"unknown plugin kind '{kind}': choose one of {', '.join(KINDS)}")


@click.command("list")
@click.argument("kind", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def list_plugins(kind, as_json):
    """List the plugins of every kind, or of one KIND (text, image, reducer, source, clusterer,
    classifier), with their provider and what to install for unavailable ones."""
    from placedemarche.core.plugins import KINDS

    kinds = (_parse_kind(kind),) if kind else tuple(KINDS)
    rows = _plugin_rows(kinds)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _render_by_kind(rows, kinds)


@click.command("list-extractors")
@click.option("--modality", type=click.Choice(["text", "image"]), help="Only this modality.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_extractors(modality, as_json):
    """List text and image extractors, and what to install for unavailable ones (as `pm list text`
    and `pm list image`, in one table)."""
    rows = _plugin_rows((modality,) if modality else ("text", "image"))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _render_plugins(rows, "Extractors")


@click.command("list-reducers")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_reducers(as_json):
    """List dimensionality reducers (PCA, SVD, t-SNE, ...); the same as `pm list reducer`."""
    rows = _plugin_rows(("reducer",))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _render_plugins(rows, "Reducers")


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json):
    """List loaded plugin modules, the hooks they implement, and plugins that failed to load."""
    from placedemarche.core.plugins import loaded_plugins, plugin_failures

    loaded = loaded_plugins()
    failures = plugin_failures()
    if as_json:
        click.echo(json.dumps({"loaded": loaded,
                               "failed": [{"plugin": f.plugin, "error": f.error} for f in failures]},
                              indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    from placedemarche.cli.render import console

    table = Table(title="Plugins")
    for column in ("plugin", "provider", "hooks"):
        table.add_column(column)
    for row in loaded:
        provider = row["provider"] + (f" {row['version']}" if row["version"] else "")
        table.add_row(Text(row["name"]), Text(provider), ", ".join(row["hooks"]))
    console.print(table)
    if failures:
        failed = Table(title="Failed to load", title_style="bold red")
        failed.add_column("plugin")
        failed.add_column("error")
        for f in failures:
            # Errors quote code and hints ("No module named 'x'", "[torch]"): not markup.
            failed.add_row(Text(f.plugin), Text(f.error))
        console.print(failed)
