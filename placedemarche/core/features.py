"""Computing a catalogue's features with an extractor plugin, through the feature cache."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import ImageExtractor, PluginBase, TextExtractor
from .cache import FeatureCache, extractor_key, fingerprint_images, fingerprint_texts
from .catalog import Catalog, TextField
from .errors import PlaceDeMarcheError


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


def extract_features(extractor: PluginBase, items: Sequence, *, cache: FeatureCache | None = None) -> Features:
    """Fit the extractor on ``items`` and transform them, or reuse cached features.

    Usage::

        feats = extract_features(create_plugin("text", "tfidf"), catalog.texts(), cache=FeatureCache())
    """
    started = time.perf_counter()
    key = None
    if cache is not None:
        key = extractor_key(extractor, fingerprint(items))
        cached = cache.load(key)
        if cached is not None and cached.shape[0] == len(items):
            return Features(cached, extractor, True, time.perf_counter() - started, key)
    matrix = extractor.fit_transform(list(items))
    if hasattr(matrix, "shape") and matrix.shape[0] != len(items):
        raise PlaceDeMarcheError(
            f"plugin '{extractor.name}' returned {matrix.shape[0]} rows for {len(items)} inputs"
        )
    if not hasattr(matrix, "tocsr"):
        matrix = np.asarray(matrix, dtype=np.float32)
    seconds = time.perf_counter() - started
    if cache is not None and key is not None:
        cache.save(key, matrix, meta={"plugin": extractor.name, "params": extractor.get_params(),
                                      "rows": len(items), "seconds": seconds})
    return Features(matrix, extractor, False, seconds, key)
