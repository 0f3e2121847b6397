"""Computing a catalogue's features with an extractor plugin, through the feature cache (a
content-addressed feature store: a set per extractor and inputs), or reading them from a
feature store that ``pm extract`` filled (``--features STORE``: :func:`store_features` picks
and aligns the sets, :func:`features_from` makes :func:`extract_features` return them)."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from placedemarche.core.base import ImageExtractor, PluginBase, TextExtractor
from placedemarche.features.cache import extractor_key, fingerprint_images, fingerprint_texts
from placedemarche.features.sets import jsonable
from placedemarche.features.store import FeatureStore, StoreError
from placedemarche.data.catalog import Catalog, TextField
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.core.plugins import create_plugin


@dataclass
class Features:
    """A feature matrix and how it was obtained."""

    matrix: Any  # numpy array or scipy sparse matrix, one row per product
    extractor: PluginBase
    from_cache: bool
    seconds: float
    key: str | None = None  # the feature cache key, when a cache was used

    @property
    def name(self) -> str:
        return self.extractor.name


def extractor_inputs(extractor: PluginBase, catalog: Catalog, text_field: TextField = "both") -> list:
    """What an extractor consumes from a catalogue: texts or image paths."""
    if isinstance(extractor, TextExtractor):
        return catalog.texts(text_field)
    if isinstance(extractor, ImageExtractor):
        missing = [catalog.ids[i] for i, p in enumerate(catalog.image_paths) if p is None]
        if missing:
            raise PlaceDeMarcheError(
                f"{len(missing)} product(s) have no image (first: {missing[0]}): "
                "validate the catalogue with --on-missing drop first"
            )
        return list(catalog.image_paths)
    raise TypeError(f"{extractor!r} is neither a text nor an image extractor")


def fingerprint(items: Sequence) -> str:
    if items and isinstance(items[0], (str,)) and not isinstance(items[0], Path):
        return fingerprint_texts(items)
    return fingerprint_images(items)


def extract_features(extractor: PluginBase, items: Sequence, *, cache: FeatureStore | None = None) -> Features:
    """Fit the extractor on ``items`` and transform them, or reuse cached features.

    The matrix is float32 (dense, or scipy CSR), as the feature store keeps it: a cached
    matrix is then the very one a fresh extraction gives.

    Usage::

        feats = extract_features(create_plugin("text", "tfidf"), catalog.texts(), cache=FeatureCache())
    """
    started = time.perf_counter()
    source = _source.get()
    if source is not None:
        found = source.lookup(extractor, len(items))
        if found is not None:
            return found
    key = None
    if cache is not None:
        key = extractor_key(extractor, fingerprint(items))
        cached = cache.load_features(key, rows=len(items))
        if cached is not None:
            return Features(cached, extractor, True, time.perf_counter() - started, key)
    matrix = extractor.fit_transform(list(items))
    if hasattr(matrix, "shape") and matrix.shape[0] != len(items):
        raise PlaceDeMarcheError(
            f"plugin '{extractor.name}' returned {matrix.shape[0]} rows for {len(items)} inputs"
        )
    if hasattr(matrix, "tocsr"):
        matrix = matrix.tocsr().astype(np.float32, copy=False)
    else:
        matrix = np.asarray(matrix, dtype=np.float32)
    seconds = time.perf_counter() - started
    if cache is not None and key is not None:
        cls = type(extractor)
        cache.save_features(key, matrix, meta={
            "plugin": extractor.name, "kind": extractor.kind, "class": f"{cls.__module__}.{cls.__qualname__}",
            "params": extractor.get_params(), "cache_version": str(getattr(cls, "cache_version", "1")),
            "rows": len(items), "seconds": round(seconds, 3)})
    return Features(matrix, extractor, False, seconds, key)


# -- features read from a feature store -------------------------------------------------
def _plugin_id(kind: str, name: str, params: dict) -> str:
    return json.dumps([kind, name, params], sort_keys=True)


@dataclass
class StoreFeatures:
    """Feature matrices read from a store, aligned with one catalogue's rows: what
    :func:`extract_features` returns, inside :func:`features_from`, for the extractors (plugin
    and parameters) they were extracted with."""

    text: tuple[str, ...] = ()  # the text specs in effect (those asked, else every set's)
    image: tuple[str, ...] = ()
    matrices: dict[str, tuple[Any, str]] = field(default_factory=dict)  # plugin id -> (matrix, key)
    sets: dict[tuple[str, str], Any] = field(default_factory=dict)  # (kind, spec) -> FeatureSet read
    refit: list[tuple[str, str]] = field(default_factory=list)  # (kind, spec) fitted by the caller instead
    dropped: list[str] = field(default_factory=list)  # catalogue ids without a feature row

    def lookup(self, extractor: PluginBase, rows: int) -> Features | None:
        found = self.matrices.get(_plugin_id(extractor.kind, extractor.name, jsonable(extractor.get_params())))
        if found is None:
            return None
        matrix, key = found
        if matrix.shape[0] != rows:
            raise PlaceDeMarcheError(f"'{extractor.name}': the store's features cover {matrix.shape[0]} "
                                     f"products but {rows} were asked: the catalogue changed after alignment")
        return Features(matrix, extractor, True, 0.0, key)


def _open_store(store) -> FeatureStore:
    return store if isinstance(store, FeatureStore) else FeatureStore(store)


def store_specs(store, text: Sequence[str] = (), image: Sequence[str] = (),
                text_field: TextField = "both") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The extractor specs to read from ``store`` (a path or FeatureStore): those given, else
    every complete set in it (text sets extracted from ``text_field``)."""
    if text or image:
        return tuple(text), tuple(image)
    store = _open_store(store)
    complete = [s for s in store.sets() if s.complete]
    text = tuple(dict.fromkeys(s.spec for s in complete if s.kind == "text"
                               and s.manifest.get("input", {}).get("text_field") == text_field))
    image = tuple(dict.fromkeys(s.spec for s in complete if s.kind == "image"))
    if not text and not image:
        raise StoreError(f"no complete feature set in {store.root}"
                         + (f" (text sets for --text-field {text_field})" if complete else "")
                         + ": fill it with pm extract --out " + str(store.root))
    return text, image


def store_features(store, catalog: Catalog, text: Sequence[str] = (), image: Sequence[str] = (),
                   text_field: TextField = "both", *, refit_learners: bool = False) -> tuple[Catalog, StoreFeatures]:
    """Read the sets of the ``text``/``image`` specs (default: every complete set, see
    :func:`store_specs`) from ``store`` (a path or FeatureStore) for the products of
    ``catalog``; returns the catalogue without the products some set has no row for (failed
    during extraction, or not extracted), and the features aligned with it.

    With ``refit_learners`` (training), the extractors that learn from data are not read but
    listed in ``refit``: the caller fits them on each fold's training rows, since a set fitted
    on every product would leak the test folds' vocabulary into training.

    Usage::

        catalog, source = store_features("features/", catalog, ["tfidf"], [])
        with features_from(source):
            report = evaluate_combinations(catalog, source.text, source.image)
    """
    store = _open_store(store)
    text, image = store_specs(store, text, image, text_field)
    source = StoreFeatures(text=text, image=image)
    for kind, specs in (("text", text), ("image", image)):
        for spec in specs:
            if refit_learners and create_plugin(kind, spec).learns_from_data:
                source.refit.append((kind, spec))
                continue
            found = store.find(kind, spec, text_field=text_field, ids=catalog.ids)
            if found is None:
                field_note = f" --text-field {text_field}" if kind == "text" and text_field != "both" else ""
                raise StoreError(f"no complete '{spec}' {kind} features in {store.root}: extract them with "
                                 f"pm extract --{kind} '{spec}'{field_note} --data CATALOGUE --out {store.root}")
            source.sets[(kind, spec)] = found
    if not source.sets:
        return catalog, source
    having = set.intersection(*(set(found.ids()) for found in source.sets.values()))
    kept_rows = [i for i, row_id in enumerate(catalog.ids) if row_id in having]
    source.dropped = [row_id for row_id in catalog.ids if row_id not in having]
    if not kept_rows:
        raise StoreError(f"no product of {catalog.source or 'the catalogue'} has features in {store.root}: "
                         "was the store extracted from another catalogue?")
    if source.dropped:
        validated_for = set(catalog.validated_for)
        catalog = catalog.subset(kept_rows)
        catalog.validated_for = validated_for  # dropping rows keeps the others valid
    ids_digest = hashlib.sha256("\0".join(catalog.ids).encode("utf-8")).hexdigest()
    for (kind, spec), found in source.sets.items():
        _, matrix = found.read(catalog.ids)  # every id is there: the others were dropped above
        plugin_id = _plugin_id(kind, found.manifest["plugin"], found.manifest["params"])
        key = hashlib.sha256(f"{found.manifest['key']}\0{ids_digest}".encode()).hexdigest()
        source.matrices[plugin_id] = (matrix, key)
    return catalog, source


_source: ContextVar[StoreFeatures | None] = ContextVar("placedemarche_store_features", default=None)


@contextmanager
def features_from(source: StoreFeatures | None) -> Iterator[None]:
    """Inside the block, :func:`extract_features` returns ``source``'s features where it has them."""
    token = _source.set(source)
    try:
        yield
    finally:
        _source.reset(token)
