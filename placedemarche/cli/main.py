"""The `pm` command: thin click commands that parse options, call the core and render."""

from __future__ import annotations

import sys

import click

from placedemarche.core.errors import PlaceDeMarcheError


class PmGroup(click.Group):
    """Turns the core's user-facing errors into a one-line message and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PlaceDeMarcheError as exc:
            from rich.markup import escape

            from placedemarche.cli.render import err_console

            # Messages hold install hints such as placedemarche[torch]: not rich markup.
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(1)
        except KeyboardInterrupt:
            from placedemarche.cli.render import err_console

            err_console.print("[bold red]interrupted[/]")
            sys.exit(130)


@click.group(cls=PmGroup)
@click.option("--verbose", is_flag=True,
              help="Show TensorFlow's start-up logs and the pkg_resources deprecation warning (hidden by default).")
@click.version_option(package_name="placedemarche")
def cli(verbose):
    """placedemarche: do products group by category on their text and images?"""
    from placedemarche.cli.render import quiet_libraries, show_warnings_as_lines

    # Before any command runs, so before anything can import TensorFlow.
    quiet_libraries(verbose)
    show_warnings_as_lines()


# Commands are grouped by the stage they serve, one module each; importing them stays cheap (heavy imports are inside).
from placedemarche.cli.audit_cmd import audit  # noqa: E402
from placedemarche.cli.data_cmds import dataset, source  # noqa: E402
from placedemarche.cli.evaluate_cmd import evaluate  # noqa: E402
from placedemarche.cli.features_cmds import cache, extract  # noqa: E402
from placedemarche.cli.plugin_cmds import list_extractors, list_plugins, list_reducers, plugins  # noqa: E402
from placedemarche.cli.serve_cmd import feedback, serve  # noqa: E402
from placedemarche.cli.train_cmds import predict, train  # noqa: E402

for _command in (list_plugins, list_extractors, list_reducers, plugins, extract, evaluate, cache, dataset, source, train, predict):
    cli.add_command(_command)
cli.add_command(feedback)
cli.add_command(serve)
cli.add_command(audit)
