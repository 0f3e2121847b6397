"""The extraction driver: a catalogue's features for each extractor, streamed into a feature store.

For each spec it builds the plugin, fits it once here when it learns from data (on every
row, or on a seeded sample of ``fit_sample`` rows), then streams the ``(id, item)`` rows of
the shards still missing through an engine (:mod:`placedemarche.features.engines`: ``local`` or
``ray``) and writes each shard as soon as its rows are back. Memory is bounded by the batch
and shard sizes; an interrupted run (Ctrl-C, a crash) keeps its finished shards, and running
it again computes only the others, with the plugin fitted the first time.

Usage::

    from placedemarche.data.catalog import load_catalog
    from placedemarche.features.driver import extract_to_store

    catalog = load_catalog("shared/data/flipkart")
    for done in extract_to_store(catalog, ["tfidf"], ["efficientnet-lite0"], "features/"):
        print(done.spec, done.features, "rows,", len(done.failed), "failed")
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from placedemarche.features.cache import extractor_key
from placedemarche.data.catalog import COLUMN_CANDIDATES, Catalog, TextField
from placedemarche.features.engines import Batch, Engine, LocalEngine
from placedemarche.features.ray_engine import RayEngine
from placedemarche.core.errors import CatalogError, PlaceDeMarcheError
from placedemarche.core.plugins import create_plugin, providing_distribution
from placedemarche.core.progress import Reporter, reporting, task
from placedemarche.features.fitted import load_fitted, save_fitted
from placedemarche.features.sets import STORE_FORMAT, FeatureSet, jsonable, library_versions
from placedemarche.features.store import FeatureStore

DEFAULT_BATCH_SIZE = 64
DEFAULT_SHARD_ROWS = 10_000


@dataclass
class ExtractedSet:
    """What one feature set holds after :func:`extract_to_store`."""

    spec: str
    kind: str
    path: Path
    rows: int  # catalogue rows
    features: int  # rows with a feature row
    failed: list[dict]  # {"id", "reason"}
    dims: int | None
    storage: str | None
    shards_written: int
    shards_reused: int
    seconds: float
    fit: dict = field(default_factory=dict)


ENGINES = ("local", "ray")


def get_engine(name: str = "local", **options) -> Engine:
    """The engine called ``name``; ``options`` (address, concurrency, num_gpus_per_worker,
    threads_per_worker, ...) are the ray engine's and are refused by ``local``."""
    if name == "local":
        unused = {k: v for k, v in options.items() if v is not None}
        if unused:
            raise PlaceDeMarcheError(
                f"{', '.join('--' + k.replace('_', '-') for k in unused)} only apply to --engine ray"
            )
        return LocalEngine()
    if name == "ray":
        return RayEngine(**options)
    raise PlaceDeMarcheError(f"unknown engine '{name}': use one of {', '.join(ENGINES)}")


def catalog_fingerprint(ids: Sequence[str], items: Sequence) -> str:
    """A hash of the rows as read (ids, texts or image locations, in order): cheap at any size."""
    digest = hashlib.sha256(b"rows\0")
    for row_id, item in zip(ids, items):
        for part in (row_id, "\0none" if item is None else str(item)):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def catalogs_to_extract(catalog: Catalog, *, text_field: TextField | None, image: bool,
                        on_missing: str = "drop") -> tuple[Catalog | None, Catalog | None]:
    """The rows of an unvalidated ``catalog`` each modality extracts: ``(texts, images)``, None
    for one not asked (``text_field`` None, ``image`` False). Empty texts are dropped (or refused
    with ``on_missing="fail"``) as by the other commands; an unusable image is not dropped but
    becomes a failed row of the set's manifest, unless ``on_missing="fail"`` refuses it first."""
    texts = images = None
    if text_field:
        texts = catalog.validated(text=text_field, image=False, on_missing=on_missing)
    if image:
        if on_missing == "fail":
            images = catalog.validated(text=None, image=True, check_decode=False, on_missing="fail")
        elif catalog.columns and not catalog.columns.get("image"):
            raise CatalogError(f"{catalog.source or 'catalogue'}: no image column (looked for "
                               f"{', '.join(COLUMN_CANDIDATES['image'])}); name it with --image-column")
        else:
            images = catalog
    return texts, images


def extract_to_store(catalog: Catalog, text_specs: Sequence[str] = (), image_specs: Sequence[str] = (),
                     store: FeatureStore | str | Path = "features", *, engine: str | Engine = "local",
                     text_field: TextField = "both", batch_size: int = DEFAULT_BATCH_SIZE,
                     shard_rows: int = DEFAULT_SHARD_ROWS, fit_sample: int | None = None, seed: int = 0,
                     progress: Reporter | None = None, **engine_options: Any) -> list[ExtractedSet]:
    """Extract every spec's features of ``catalog`` into ``store``; returns one summary per set.

    A product without an image, or whose image cannot be read, gets no feature row and is
    listed in its set's manifest (``failed``). ``engine`` is an engine's name, its
    ``engine_options`` going to it (``address``, ``concurrency``, ``num_gpus_per_worker``...
    for ``ray``), or an engine already made (left open, for the caller's next calls).
    """
    if progress is not None:
        with reporting(progress):
            return extract_to_store(catalog, text_specs, image_specs, store, engine=engine,
                                    text_field=text_field, batch_size=batch_size, shard_rows=shard_rows,
                                    fit_sample=fit_sample, seed=seed, **engine_options)
    if not text_specs and not image_specs:
        raise PlaceDeMarcheError("nothing to extract: give --text and/or --image (see pm list-extractors)")
    for name, value in (("--batch-size", batch_size), ("--shard-rows", shard_rows), ("--fit-sample", fit_sample)):
        if value is not None and value < 1:
            raise PlaceDeMarcheError(f"{name} must be at least 1, not {value}")
    if not isinstance(store, FeatureStore):
        store = FeatureStore(store, create=True)
    # every plugin is built before anything runs: a bad spec fails at once
    plugins = [("text", spec, create_plugin("text", spec)) for spec in text_specs] + \
              [("image", spec, create_plugin("image", spec)) for spec in image_specs]
    runner = get_engine(engine, **engine_options) if isinstance(engine, str) else engine
    try:
        return [_extract_one(catalog, kind, spec, plugin, store, runner, text_field=text_field,
                             batch_size=batch_size, shard_rows=shard_rows, fit_sample=fit_sample, seed=seed)
                for kind, spec, plugin in plugins]
    finally:
        if runner is not engine:
            runner.close()


def _new_manifest(catalog: Catalog, kind: str, spec: str, plugin, key: str, fingerprint: str,
                  text_field: str, shard_rows: int, fit: dict, engine: str) -> dict:
    cls = type(plugin)
    runtime = getattr(plugin, "runtime_params", None)
    distribution = providing_distribution(cls)
    return {
        "format": STORE_FORMAT, "key": key, "spec": spec, "kind": kind, "plugin": plugin.name,
        "class": f"{cls.__module__}.{cls.__qualname__}", "params": jsonable(plugin.get_params()),
        "runtime": jsonable(runtime()) if callable(runtime) else {},
        "cache_version": str(getattr(cls, "cache_version", "1")),
        "input": {"text_field": text_field} if kind == "text" else {"image_column": catalog.columns.get("image")},
        "catalogue": {"source": catalog.source, "rows": len(catalog), "fingerprint": fingerprint},
        "rows": len(catalog), "shard_rows": shard_rows, "dims": None, "storage": None, "fit": fit,
        "versions": library_versions(*([distribution] if distribution and distribution != "placedemarche" else [])),
        "engine": engine, "seconds": 0.0,
    }


def _fit(plugin, items: Sequence, fit_sample: int | None, seed: int) -> dict:
    """Fit ``plugin`` once, on every usable row or a seeded random sample; what was done."""
    usable = [i for i, item in enumerate(items) if item is not None]
    chosen = usable
    if fit_sample is not None and fit_sample < len(usable):
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(len(usable), size=fit_sample, replace=False).tolist())
        chosen = [usable[i] for i in chosen]
    if not chosen:
        raise PlaceDeMarcheError(f"plugin '{plugin.name}' learns from data but no row has an input to fit on")
    started = time.perf_counter()
    plugin.fit([items[i] for i in chosen])
    return {"rows": len(chosen), "on": "sample" if len(chosen) < len(usable) else "all",
            "seconds": round(time.perf_counter() - started, 3)}


def _extract_one(catalog: Catalog, kind: str, spec: str, plugin, store: FeatureStore, runner, *,
                 text_field: str, batch_size: int, shard_rows: int, fit_sample: int | None,
                 seed: int) -> ExtractedSet:
    started = time.perf_counter()
    ids = list(catalog.ids)
    items = catalog.texts(text_field) if kind == "text" else list(catalog.image_paths)
    learns = bool(plugin.learns_from_data)
    fit = {"learns_from_data": learns, "sample": fit_sample if learns else None,
           "seed": seed if learns and fit_sample is not None else None}
    fingerprint = catalog_fingerprint(ids, items)
    # the fit sample changes the features: it is part of what the set is
    key = extractor_key(plugin, fingerprint + json.dumps({k: fit[k] for k in ("sample", "seed")}))
    path = store.set_path(plugin.name, key)
    with store.writing(path):
        feature_set = store.open_set(path, _new_manifest(catalog, kind, spec, plugin, key, fingerprint,
                                                         text_field, shard_rows, fit, runner.name))
        return _fill(feature_set, plugin, ids, items, runner, spec=spec, kind=kind, batch_size=batch_size,
                     fit_sample=fit_sample, seed=seed, started=started)


def _fill(feature_set: FeatureSet, plugin, ids: list[str], items: Sequence, runner, *, spec: str, kind: str,
          batch_size: int, fit_sample: int | None, seed: int, started: float) -> ExtractedSet:
    """Fit (once) and compute the shards of ``feature_set`` not yet written and verified."""
    learns = bool(plugin.learns_from_data)
    shard_rows = feature_set.manifest["shard_rows"]  # a resumed set keeps its layout
    n_shards = math.ceil(len(ids) / shard_rows)
    todo = [i for i in range(n_shards) if not feature_set.shard_ok(i)]
    if learns:
        fitted = load_fitted(feature_set)
        if fitted is None:
            todo = list(range(n_shards))  # shards of a lost fit cannot be mixed with a new one
            feature_set.manifest.update(shards=[], complete=False, dims=None, storage=None)
            feature_set.manifest["fit"].update(_fit(plugin, items, fit_sample, seed))
            save_fitted(feature_set, plugin)
        else:
            plugin = fitted
    feature_set.manifest["complete"] = False
    feature_set.save_manifest()
    with task(f"{spec}: extracting {kind} features", total=len(ids)) as progress:
        progress.advance(len(ids) - sum(len(_shard_range(i, shard_rows, len(ids))) for i in todo))
        writer = _ShardWriter(feature_set, todo, ids, items, shard_rows, progress)

        def rows():
            for index in todo:
                for r in _shard_range(index, shard_rows, len(ids)):
                    if items[r] is not None:
                        yield ids[r], items[r]

        writer.flush_empty()
        if writer.index is not None:  # something left to compute (an engine may cost a start-up)
            for batch in runner.map(plugin, rows(), batch_size):
                writer.add(batch)
                progress.advance(batch.rows)
        writer.finish()
    manifest = feature_set.manifest
    manifest["seconds"] = round(manifest.get("seconds", 0.0) + time.perf_counter() - started, 3)
    manifest["complete"] = True
    feature_set.save_manifest()
    return ExtractedSet(spec, kind, feature_set.path, len(ids), feature_set.rows_with_features,
                        feature_set.failed, manifest.get("dims"), manifest.get("storage"),
                        len(todo), n_shards - len(todo), time.perf_counter() - started, manifest["fit"])


def _shard_range(index: int, shard_rows: int, n: int) -> range:
    return range(index * shard_rows, min(n, (index + 1) * shard_rows))


class _ShardWriter:
    """Gathers the engine's batches (consecutive rows, in input order) into shards, and writes
    each shard once all its rows are back; a batch may straddle shards."""

    def __init__(self, feature_set: FeatureSet, todo: list[int], ids: list[str], items: Sequence,
                 shard_rows: int, progress):
        self.feature_set, self.todo, self.ids, self.items = feature_set, list(todo), ids, items
        self.shard_rows, self.progress = shard_rows, progress
        self._start_next()

    def _start_next(self) -> None:
        self.index = self.todo.pop(0) if self.todo else None
        self.expected: set[str] = set()
        self.parts: list[Batch] = []
        self.failed: list[tuple[str, str]] = []
        if self.index is None:
            return
        for r in _shard_range(self.index, self.shard_rows, len(self.ids)):
            if self.items[r] is None:
                self.failed.append((self.ids[r], "no image given"))
            else:
                self.expected.add(self.ids[r])
        self.progress.advance(len(self.failed))

    def flush_empty(self) -> None:
        """Write the shards that wait for no row (every input missing)."""
        while self.index is not None and not self.expected:
            self._write()

    def add(self, batch: Batch) -> None:
        while batch.rows:
            if self.index is None:
                raise PlaceDeMarcheError(f"engine returned rows it was not given (first: "
                                         f"{(batch.ids or [f for f, _ in batch.failed])[0]})")
            mine = [k for k, row_id in enumerate(batch.ids) if row_id in self.expected]
            failed_mine = [f for f in batch.failed if f[0] in self.expected]
            if not mine and not failed_mine:
                raise PlaceDeMarcheError(f"engine returned rows out of order (first unexpected: "
                                         f"{(batch.ids or [f for f, _ in batch.failed])[0]})")
            if len(mine) == len(batch.ids) and len(failed_mine) == len(batch.failed):
                here, batch = batch, Batch([], None, [])
            else:
                rest = [k for k in range(len(batch.ids)) if batch.ids[k] not in self.expected]
                here = Batch([batch.ids[k] for k in mine], batch.matrix[mine] if mine else None, failed_mine)
                batch = Batch([batch.ids[k] for k in rest], batch.matrix[rest] if rest else None,
                              [f for f in batch.failed if f[0] not in self.expected])
            self.expected.difference_update(here.ids)
            self.expected.difference_update(f[0] for f in here.failed)
            if here.ids:
                self.parts.append(here)
            self.failed.extend(here.failed)
            if not self.expected:
                self._write()
                self.flush_empty()

    def _write(self) -> None:
        import scipy.sparse

        ids = [row_id for part in self.parts for row_id in part.ids]
        matrices = [part.matrix for part in self.parts]
        matrix = None
        if matrices:
            matrix = scipy.sparse.vstack(matrices, format="csr") if scipy.sparse.issparse(matrices[0]) \
                else np.vstack(matrices)
        order = {row_id: r for r, row_id in enumerate(self.ids[self.index * self.shard_rows:
                                                                (self.index + 1) * self.shard_rows])}
        failed = sorted(self.failed, key=lambda f: order.get(f[0], 0))
        self.feature_set.write_shard(self.index, ids, matrix, failed, first_row=self.index * self.shard_rows)
        self._start_next()

    def finish(self) -> None:
        if self.index is not None:
            raise PlaceDeMarcheError(f"engine stopped before shard {self.index} was complete "
                                     f"({len(self.expected)} row(s) never came back): run again to resume")
