"""Progress reporting from the core to whoever displays it, without the core printing.

The CLI installs a reporter with :func:`reporting`; core code and plugins open tasks with
:func:`task` and advance them. Without a reporter every call is a no-op, so library use
stays silent.

Usage::

    with task("tfidf: vectorising", total=len(texts)) as t:
        for batch in batches:
            ...
            t.advance(len(batch))
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterable, Iterator, Protocol, Sequence, TypeVar

T = TypeVar("T")


class Reporter(Protocol):
    def start(self, description: str, total: float | None) -> object: ...
    def advance(self, handle: object, amount: float) -> None: ...
    def stop(self, handle: object) -> None: ...


_reporter: ContextVar[Reporter | None] = ContextVar("placedemarche_reporter", default=None)


class Task:
    def __init__(self, reporter: Reporter | None, handle: object):
        self._reporter = reporter
        self._handle = handle

    def advance(self, amount: float = 1) -> None:
        if self._reporter is not None:
            self._reporter.advance(self._handle, amount)

    def describe(self, description: str) -> None:
        """Change what the task says it is doing (reporters without ``describe`` ignore it)."""
        describe = getattr(self._reporter, "describe", None)
        if describe is not None:
            describe(self._handle, description)


@contextmanager
def task(description: str, total: float | None = None) -> Iterator[Task]:
    """Open a progress task; it is closed (and hidden) when the block ends."""
    reporter = _reporter.get()
    handle = reporter.start(description, total) if reporter is not None else None
    try:
        yield Task(reporter, handle)
    finally:
        if reporter is not None:
            reporter.stop(handle)


def track(items: Iterable[T], description: str, total: float | None = None) -> Iterator[T]:
    """Iterate over ``items``, advancing a progress task by one per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total) as t:
        for item in items:
            yield item
            t.advance(1)


def batched(items: Sequence[T], size: int, description: str) -> Iterator[Sequence[T]]:
    """Yield ``items`` in slices of ``size``, advancing a progress task by each slice's length
    once the caller has processed it (the bar counts finished items, not started ones)."""
    if int(size) < 1:
        from placedemarche.core.errors import PlaceDeMarcheError

        raise PlaceDeMarcheError(f"{description.split(':')[0]}: batch size must be at least 1, got {size}")
    size = int(size)
    with task(description, total=len(items)) as t:
        for start in range(0, len(items), size):
            batch = items[start:start + size]
            yield batch
            t.advance(len(batch))


@contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Send progress of the enclosed core calls to ``reporter``."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)
