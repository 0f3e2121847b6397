"""Feature matrices in the feature cache, kept as feature sets of the store's format.

:func:`~placedemarche.features.extraction.extract_features` saves an extractor's matrix as a
feature set (:class:`~placedemarche.features.store.FeatureSet`: Parquet shards of
``CACHE_SHARD_ROWS`` rows, ``manifest.json`` with each shard's sha256) in
``<cache>/<key[:2]>/<key>/``, the cache key naming it as it names an array entry. The items
``extract_features`` is given have no ids of their own, so a cached set's row ids are the
row positions ``"0"``, ``"1"``...: its shards read back in order and nothing else.

The manifest is written after each shard and says the set is complete only with the last
one (it is removed before a set is rewritten), so a set is only read once every shard is on
disk, and a shard whose bytes do not match the manifest makes
the whole set load as missing: the caller recomputes and saves over it.

Usage::

    path = feature_set_path(cache.root, key)
    save_feature_set(path, key, matrix, {"plugin": "tfidf", "kind": "text"})
    matrix = load_feature_set(path, key, rows=matrix.shape[0])  # None when absent or damaged
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from placedemarche.features.store import MANIFEST, STORE_FORMAT, FeatureSet, StoreError, library_versions

#: Rows per shard of a cached set: pm extract's default, so one catalogue of the study is one shard.
CACHE_SHARD_ROWS = 10_000


def feature_set_path(root: str | os.PathLike, key: str) -> Path:
    return Path(root) / key[:2] / key


def is_set_file(path: Path) -> bool:
    """True for the files a cached feature set is made of (its manifest and shards)."""
    return path.name == MANIFEST or (path.suffix == ".parquet" and path.name.startswith("part-"))


@lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    # read once per process: looking up package metadata costs more than writing a small set
    return library_versions()


def _positions(start: int, stop: int) -> list[str]:
    return [str(i) for i in range(start, stop)]


def save_feature_set(path: Path, key: str, matrix, description: dict[str, Any]) -> Path:
    """Write ``matrix`` (float32 ndarray or scipy sparse) as the feature set ``path``;
    ``description`` (plugin, kind, params, seconds...) goes into the manifest."""
    import scipy.sparse

    rows = matrix.shape[0]
    path.mkdir(parents=True, exist_ok=True)
    # the old set stops being valid before any of its shards is replaced
    (path / MANIFEST).unlink(missing_ok=True)
    for stale in path.glob("part-*.parquet"):
        stale.unlink(missing_ok=True)
    manifest = {"plugin": "", "kind": None, "params": {}, **description,
                "format": STORE_FORMAT, "key": key, "ids": "row positions", "rows": rows,
                "shard_rows": CACHE_SHARD_ROWS, "dims": int(matrix.shape[1]),
                "storage": "sparse" if scipy.sparse.issparse(matrix) else "dense",
                "versions": dict(_versions()), "shards": [], "complete": False}
    manifest.setdefault("spec", manifest["plugin"])
    feature_set = FeatureSet(path, manifest)
    if scipy.sparse.issparse(matrix):
        matrix = matrix.tocsr()
    for index, start in enumerate(range(0, rows, CACHE_SHARD_ROWS)):
        stop = min(rows, start + CACHE_SHARD_ROWS)
        # the manifest written with the last shard is the first to say the set is complete
        feature_set.manifest["complete"] = stop == rows
        feature_set.write_shard(index, _positions(start, stop), matrix[start:stop], [], first_row=start)
    return path


def load_feature_set(path: Path, key: str, rows: int):
    """The matrix of the complete set ``path`` saved under ``key`` with ``rows`` rows, or None
    when it is absent, incomplete, damaged (a shard not matching its sha256) or another's."""
    try:
        feature_set = FeatureSet(path)
        manifest = feature_set.manifest
        if manifest.get("key") != key or not feature_set.complete or manifest.get("rows") != rows:
            return None
        ids, matrix = feature_set.read()  # a new, writable array: callers may scale it in place
    # a missing or damaged manifest or shard (StoreError), or bytes that match their checksum
    # yet do not decode (a file from another pyarrow, a hand-edited set): recomputed, all of them
    except Exception:
        return None
    return matrix if ids == _positions(0, rows) else None


def verify_feature_set(path: Path) -> bool:
    """True when the set ``path`` is complete and every shard matches its sha256."""
    try:
        feature_set = FeatureSet(path)
    except StoreError:
        return False
    shards = feature_set.manifest.get("shards", [])
    return feature_set.complete and all(feature_set.shard_ok(i) for i in range(len(shards)))
