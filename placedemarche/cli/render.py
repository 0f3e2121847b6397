"""Terminal rendering for the CLI: the rich console, progress reporter and one-line errors."""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskProgressColumn,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)

from ..core.progress import reporting

def _width() -> int | None:
    """Full width on a terminal; 160 columns when piped, so tables are not cut to 80."""
    if sys.stdout.isatty():
        return None
    return int(os.environ.get("COLUMNS", "160"))


console = Console(width=_width())
err_console = Console(stderr=True, width=_width())


class RichReporter:
    """Shows core progress tasks as rich progress bars (with a rate, e.g. images/s)."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def start(self, description: str, total: float | None) -> object:
        return self.progress.add_task(description, total=total)

    def advance(self, handle: object, amount: float) -> None:
        self.progress.advance(handle, amount)

    def stop(self, handle: object) -> None:
        self.progress.remove_task(handle)


class _Rate(TextColumn):
    def __init__(self):
        super().__init__("")

    def render(self, task):
        speed = task.finished_speed or task.speed
        from rich.text import Text

        return Text(f"{speed:,.1f}/s" if speed else "", style="progress.data.speed")


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[None]:
    """Report core progress on stderr while the block runs (no-op when disabled)."""
    if not enabled:
        with reporting(None):
            yield
        return
    progress = Progress(
        SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TaskProgressColumn(), _Rate(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=err_console, transient=True,
    )
    with progress, reporting(RichReporter(progress)):
        yield


def show_warnings_as_lines() -> None:
    """Print library warnings (e.g. missing NLTK data) as one line each on stderr."""

    def _show(message, category, filename, lineno, file=None, line=None):
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False)

    warnings.showwarning = _show
