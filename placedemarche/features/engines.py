"""Engines run a (fitted) extractor plugin over a stream of catalogue rows, batch by batch.

The driver (``features/driver.py``) fits learned extractors once, cuts the catalogue into shards
and writes each shard of the feature store; an engine only turns ``(id, item)`` rows into
feature rows. ``local`` runs in this process (nothing to install); ``ray`` spreads the batches
over a Ray Data actor pool, one plugin instance per actor (``features/ray_engine.py``).

Contract shared by every engine:

- ``engine.map(plugin, rows, batch_size)`` takes an iterable of ``(id, item)`` (item: a text,
  or an image path/URL) and yields :class:`Batch` objects **in input order**, each covering a
  run of consecutive input rows: every input id appears exactly once, either in ``Batch.ids``
  (with its feature row) or in ``Batch.failed`` (with the reason).
- The plugin is already fitted: engines only call ``transform``.
- A row whose input cannot be read (``ImageReadError``) is a failure, never a crash; any
  other exception stops the run (a bug or a broken model must not produce a half store).

The driver chooses one by name (``features/driver.py``, ``get_engine``).

Usage::

    engine = LocalEngine()
    for batch in engine.map(plugin, zip(catalog.ids, catalog.image_paths), batch_size=64):
        ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol

import numpy as np

from placedemarche.core.errors import ImageReadError, PlaceDeMarcheError


@dataclass
class Batch:
    """Feature rows for consecutive input rows; ``failed`` holds the rows that gave none."""

    ids: list[str]
    matrix: Any  # float32 ndarray or scipy CSR matrix, one row per id in ``ids``
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    positions: list[int] = field(default_factory=list)  # input positions of ``ids`` (optional)

    @property
    def rows(self) -> int:
        return len(self.ids) + len(self.failed)


def _as_matrix(matrix):
    if hasattr(matrix, "tocsr"):
        return matrix.tocsr().astype(np.float32)
    return np.asarray(matrix, dtype=np.float32)


def transform_rows(plugin, ids: list[str], items: list) -> Batch:
    """``plugin.transform(items)`` as a Batch; on an unreadable input, retried row by row so
    the readable rows keep their features and each unreadable one is listed with its reason."""
    if not ids:
        return Batch([], None, [])
    try:
        matrix = plugin.transform(list(items))
    except ImageReadError:
        kept, rows, failed = [], [], []
        for row_id, item in zip(ids, items):
            try:
                rows.append(_as_matrix(plugin.transform([item])))
                kept.append(row_id)
            except ImageReadError as error:
                failed.append((row_id, str(error)))
        if not rows:
            return Batch([], None, failed)
        import scipy.sparse

        stacked = scipy.sparse.vstack(rows).tocsr() if hasattr(rows[0], "tocsr") else np.vstack(rows)
        return Batch(kept, stacked, failed)
    matrix = _as_matrix(matrix)
    if matrix.shape[0] != len(ids):
        raise PlaceDeMarcheError(
            f"plugin '{plugin.name}' returned {matrix.shape[0]} rows for {len(ids)} inputs"
        )
    return Batch(list(ids), matrix, [])


def batched(rows: Iterable[tuple[str, Any]], size: int) -> Iterator[tuple[list[str], list]]:
    """``(ids, items)`` chunks of at most ``size`` rows, in order."""
    ids: list[str] = []
    items: list = []
    for row_id, item in rows:
        ids.append(row_id)
        items.append(item)
        if len(ids) >= size:
            yield ids, items
            ids, items = [], []
    if ids:
        yield ids, items


class Engine(Protocol):
    name: str

    def map(self, plugin, rows: Iterable[tuple[str, Any]], batch_size: int) -> Iterator[Batch]: ...

    def close(self) -> None: ...


class LocalEngine:
    """This process, batch by batch: memory bounded by the batch size, nothing to install."""

    name = "local"

    def map(self, plugin, rows: Iterable[tuple[str, Any]], batch_size: int) -> Iterator[Batch]:
        if batch_size < 1:
            raise PlaceDeMarcheError(f"--batch-size must be at least 1, not {batch_size}")
        for ids, items in batched(rows, batch_size):
            yield transform_rows(plugin, ids, items)

    def close(self) -> None:
        pass
