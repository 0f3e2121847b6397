"""Terminal rendering for the CLI: the rich console, progress reporter, one-line errors and
warnings, and keeping native libraries' start-up chatter off the terminal."""

from __future__ import annotations

import importlib.abc
import os
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskProgressColumn,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)

from placedemarche.core.progress import reporting


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

    def describe(self, handle: object, description: str) -> None:
        self.progress.update(handle, description=escape(description))


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
        err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)

    warnings.showwarning = _show


#: Modules whose first import writes native log lines straight to file descriptor 2.
NOISY_NATIVE_MODULES = frozenset({"tensorflow"})


def quiet_libraries(verbose: bool = False) -> None:
    """Keep TensorFlow's start-up logs and the pkg_resources deprecation warning off the
    terminal, unless ``verbose``; a TF_CPP_MIN_LOG_LEVEL the user exported wins either way.

    Since TensorFlow 2.19 the CUDA probing lines are logged by absl before TensorFlow's log
    level applies, so TF_CPP_MIN_LOG_LEVEL no longer hides them (tensorflow/tensorflow#100442):
    the first ``import tensorflow`` also runs with native stderr sent to /dev/null. Python
    errors and warnings still show; a native crash during that import would print nothing,
    which is what ``pm --verbose`` is for.
    """
    # "0" when verbose: the plugins' own quiet_tensorflow() only sets a level not yet set.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    if verbose:
        return
    # tensorflow_hub imports pkg_resources; nothing the user can act on.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    if not any(isinstance(f, _QuietFirstImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFirstImport(NOISY_NATIVE_MODULES))


class _QuietFirstImport(importlib.abc.MetaPathFinder):
    """Finds a noisy module with the other finders and wraps its loader in a _QuietLoader."""

    def __init__(self, names: frozenset[str]):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # The module gets its real loader back: packages read their resources through it.
        module.__loader__ = module.__spec__.loader = self.loader
        with _native_stderr_silenced():
            self.loader.exec_module(module)


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # CliRunner, notebooks: no descriptor
        return None


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to /dev/null while Python's
    sys.stderr (progress bars, warnings, errors) keeps writing to the real stderr."""
    python_on_fd2 = _fileno(sys.stderr) == 2
    original = sys.stderr
    if python_on_fd2:
        original.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    replacement = None
    try:
        if python_on_fd2:
            replacement = open(saved, "w", buffering=1, encoding=original.encoding,
                               errors=original.errors, closefd=False)
            sys.stderr = replacement
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        if replacement is not None:
            sys.stderr = original
            replacement.close()  # flushes; the descriptor is closed just below
        os.close(saved)
        os.close(devnull)
