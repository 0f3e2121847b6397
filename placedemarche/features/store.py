"""The feature store: a directory of feature sets (:mod:`placedemarche.features.sets`) and of
the arrays kept beside them.

A set is addressed in one of two ways, both by a key hashing the plugin, its parameters
(runtime ones included) and a fingerprint of its inputs
(:func:`placedemarche.features.cache.extractor_key`):

- by name, as ``pm extract`` writes them: ``<plugin>-<key[:16]>/``, found by the extractor
  spec (:meth:`FeatureStore.find`), its row ids the catalogue's, with ``fitted.pkl`` for
  extractors that learn from data (the plugin fitted once, reused on resume);
- by content, as the feature cache (:class:`placedemarche.features.cache.FeatureCache`, the
  store at ``PM_CACHE_DIR``) keeps every extraction: ``<key[:2]>/<key>/``
  (:meth:`FeatureStore.save_features`, :meth:`FeatureStore.load_features`), its row ids the
  row positions ``"0"``, ``"1"``... of the extractor's inputs.

Arrays that are not feature matrices (t-SNE maps, cluster labels) go through ``store.arrays``
(:class:`ArrayFiles`): ``<key[:2]>/<key>.npy`` (dense) or ``.npz`` (sparse) and ``<key>.json``
holding the data file's sha256. Every file is written atomically and nothing is read that
does not match its recorded sha256: a damaged set or array loads as missing (the caller
recomputes it) or, for ``pm extract``, is recomputed on resume.

Usage::

    store = FeatureStore("features/")
    feature_set = store.find("text", "tfidf")
    ids, matrix = feature_set.read(catalog.ids)  # aligned to the requested ids

    cache = FeatureStore("cache/", create=True)
    cache.save_features(key, matrix, meta={"plugin": "tfidf"})
    matrix = cache.load_features(key, rows=matrix.shape[0])  # None when absent or damaged
    cache.arrays.save(map_key, xy, meta={"what": "tsne-embedding"})
    xy = cache.arrays.load(map_key)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from placedemarche.core.files import atomic_writer
from placedemarche.core.plugins import create_plugin
from placedemarche.features.sets import MANIFEST, STORE_FORMAT, FeatureSet, StoreError, jsonable, library_versions

FITTED = "fitted.pkl"
LOCK = ".lock"
#: Rows per shard of a content-addressed set: pm extract's default, so one catalogue of the
#: study is one shard.
CACHE_SHARD_ROWS = 10_000
#: The data file of an array, by storage format.
DATA_SUFFIXES = {"dense": ".npy", "sparse": ".npz"}
#: Version of the metadata written beside each array; other versions load as missing.
ENTRY_VERSION = 2


def is_set_file(path: Path) -> bool:
    """True for the files a feature set is made of (manifest, shards, fitted plugin, lock)."""
    return path.name in (MANIFEST, FITTED, LOCK) or (path.suffix == ".parquet" and path.name.startswith("part-"))


def _is_temp(path: Path) -> bool:
    # atomic_writer names its temporary files ".<name>.<random>.tmp"; an early version used
    # ".tmp-<random>.npy": both start with a dot, which entries never do (but a set's lock)
    return path.name.startswith(".") and path.name != LOCK


@lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    # read once per process: looking up package metadata costs more than writing a small set
    return library_versions()


def _positions(start: int, stop: int) -> list[str]:
    return [str(i) for i in range(start, stop)]


# -- arrays ---------------------------------------------------------------------------------
class ArrayFiles:
    """Arrays by key under a store's root: ``<key>.npy`` for a dense array, ``<key>.npz`` for a
    sparse matrix, and ``<key>.json``, written after it, holding the data file's sha256, the
    array's shape and dtype, and the caller's ``meta``. An entry whose metadata is missing,
    damaged or of another version, or whose data does not match it (a truncated copy, a
    flipped bit, a crash between the two writes), loads as missing.

    Usage::

        store.arrays.save(key, labels, meta={"what": "cluster-labels"})
        labels = store.arrays.load(key)  # None when absent or damaged
    """

    def __init__(self, root: Path):
        self.root = root

    def base(self, key: str) -> Path:
        """The entry's path without suffix: ``<root>/<key[:2]>/<key>``."""
        return self.root / key[:2] / key

    def save(self, key: str, array, meta: dict | None = None) -> Path:
        """Store ``array`` (numpy array or scipy sparse matrix) under ``key``; returns the data file."""
        import scipy.sparse

        buffer = io.BytesIO()
        if scipy.sparse.issparse(array):
            array, storage = array.tocsr(), "sparse"
            scipy.sparse.save_npz(buffer, array)
        else:
            array, storage = np.asarray(array), "dense"
            np.save(buffer, array, allow_pickle=False)
        data = buffer.getvalue()  # hashed as written, not read back after a concurrent writer
        base = self.base(key)
        target = base.with_suffix(DATA_SUFFIXES[storage])
        with atomic_writer(target) as handle:
            handle.write(data)
        for other in set(DATA_SUFFIXES.values()) - {target.suffix}:
            base.with_suffix(other).unlink(missing_ok=True)  # the same key saved in the other format
        entry = {"version": ENTRY_VERSION, "format": storage, "sha256": hashlib.sha256(data).hexdigest(),
                 "shape": list(array.shape), "dtype": str(array.dtype), "meta": jsonable(meta or {})}
        # last, so that the entry only becomes valid once its data is complete
        with atomic_writer(base.with_suffix(".json"), "w", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, indent=2))
        return target

    def load(self, key: str):
        """The array saved under ``key``, or None when there is none or it is damaged."""
        verified = self.verified(key)
        if verified is None:
            return self._migrate(key)
        data, entry = verified
        try:
            if entry["format"] == "sparse":
                import scipy.sparse

                array = scipy.sparse.load_npz(io.BytesIO(data))
            else:
                array = np.load(io.BytesIO(data), allow_pickle=False)
        # The bytes are those save() wrote, yet decoding can still fail (a file from another
        # numpy/scipy version, a hand-edited entry) with any of BadZipFile, ValueError,
        # KeyError, EOFError, OSError, UnpicklingError...: recomputing is the remedy for each.
        except Exception:
            return None
        if list(array.shape) != entry["shape"] or str(array.dtype) != entry["dtype"]:
            return None
        return array

    def verified(self, key: str) -> tuple[bytes, dict] | None:
        """The data file's bytes and the entry's metadata, if they agree; else None."""
        base = self.base(key)
        try:
            entry = json.loads(base.with_suffix(".json").read_text(encoding="utf-8"))
            if entry["version"] != ENTRY_VERSION:
                return None
            data = base.with_suffix(DATA_SUFFIXES[entry["format"]]).read_bytes()
            expected = entry["sha256"]
        # absent or unreadable files, text that is not JSON (ValueError), JSON that is not
        # an entry's metadata (KeyError, TypeError): all mean the entry is not usable
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if hashlib.sha256(data).hexdigest() != expected:
            return None
        return data, entry

    def meta(self, key: str) -> dict:
        """The ``meta`` saved with ``key`` (the whole metadata of a first-format entry), or {}."""
        try:
            entry = json.loads(self.base(key).with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(entry, dict):
            return {}
        meta = entry.get("meta", {}) if "version" in entry else entry
        return meta if isinstance(meta, dict) else {}

    def remove(self, key: str) -> None:
        base = self.base(key)
        for suffix in (".json", *DATA_SUFFIXES.values()):  # metadata first: the entry is invalid at once
            base.with_suffix(suffix).unlink(missing_ok=True)

    def _migrate(self, key: str):
        """An entry of the first format (metadata without a version or checksum) that decodes
        completely is kept and given a checksum, so nobody recomputes a whole cache after an
        upgrade; one that does not decode loads as missing."""
        base = self.base(key)
        try:
            old_meta = json.loads(base.with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(old_meta, dict) or "version" in old_meta:
            return None
        try:
            if base.with_suffix(".npy").is_file():
                array = np.load(base.with_suffix(".npy"), allow_pickle=False)
            elif base.with_suffix(".npz").is_file():
                import scipy.sparse

                array = scipy.sparse.load_npz(base.with_suffix(".npz"))
            else:
                return None
        except Exception:  # truncated or damaged: the same remedy as for any damaged entry
            return None
        self.save(key, array, meta=old_meta)
        return array


@dataclass
class StoreInfo:
    """What :meth:`FeatureStore.info` found under a store's root."""

    path: Path
    entries: int  # feature sets and array files
    bytes: int
    damaged: int = 0  # counted only by ``info(verify=True)``
    temp_files: int = 0
    feature_sets: int = 0

    @property
    def array_files(self) -> int:
        """``.npy``/``.npz`` entries: maps, labels, and feature matrices of an older cache."""
        return self.entries - self.feature_sets


# -- the store ------------------------------------------------------------------------------
class FeatureStore:
    """A directory of feature sets (named by ``pm extract`` or content-addressed) and arrays.

    ``create`` allows a root that does not exist yet (it is made by the first write);
    without it, a missing root is an error naming how to fill it.

    Usage::

        store = FeatureStore("features/")
        for feature_set in store.sets():
            print(feature_set.spec, feature_set.manifest["rows"])
    """

    def __init__(self, root: str | os.PathLike, *, create: bool = False):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"feature store {self.root} is a file, not a directory")
        if not create and not self.root.is_dir():
            raise StoreError(f"feature store not found: {self.root} (create it with pm extract --out {self.root})")
        self.arrays = ArrayFiles(self.root)

    # -- sets named by pm extract -------------------------------------------------------------
    @contextmanager
    def writing(self, path: Path) -> Iterator[None]:
        """Hold the set directory ``path`` for one writer: a second pm extract of the same set
        fails at once instead of interleaving shards (the lock goes with the process)."""
        path.mkdir(parents=True, exist_ok=True)
        with open(path / ".lock", "a+b") as handle:
            try:
                import fcntl
            except ImportError:  # not POSIX: no lock, as before
                yield
                return
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise StoreError(f"another pm extract is writing {path}: wait for it to end, or stop it") from None
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def set_path(self, plugin_name: str, key: str) -> Path:
        return self.root / f"{plugin_name}-{key[:16]}"

    def open_set(self, path: Path, manifest: dict) -> FeatureSet:
        """The set at ``path`` if its manifest has ``manifest``'s key, else a new empty one there."""
        if (path / MANIFEST).is_file():
            try:
                existing = FeatureSet(path)
                if existing.manifest.get("key") == manifest["key"]:
                    return existing
            except StoreError:
                pass  # a damaged manifest: start the set again
        path.mkdir(parents=True, exist_ok=True)
        for stale in list(path.glob("part-*.parquet")) + [path / FITTED]:
            stale.unlink(missing_ok=True)
        feature_set = FeatureSet(path, dict(manifest, shards=[], complete=False))
        feature_set.save_manifest()
        return feature_set

    def sets(self) -> list[FeatureSet]:
        """Every feature set in the store, by directory name (damaged manifests skipped)."""
        found = []
        for child in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if (child / MANIFEST).is_file():
                try:
                    found.append(FeatureSet(child))
                except StoreError:
                    continue
        return found

    def find(self, kind: str, spec: str, *, text_field: str | None = None,
             ids: Sequence[str] | None = None) -> FeatureSet | None:
        """The complete set of the plugin and parameters ``spec`` names (``tfidf`` matches a set
        extracted with ``tfidf:min_df=1`` only if that is tfidf's default); among several
        (other catalogues), the one holding most of ``ids``, else the last written."""
        plugin = create_plugin(kind, spec)
        params = jsonable(plugin.get_params())
        matches = [s for s in self.sets()
                   if s.complete and s.kind == kind and s.manifest.get("plugin") == plugin.name
                   and s.manifest.get("params") == params
                   and (text_field is None or kind != "text" or s.manifest.get("input", {}).get("text_field") == text_field)]
        if len(matches) <= 1 or ids is None:
            return max(matches, key=lambda s: s.manifest.get("updated", ""), default=None)
        wanted = set(ids)
        return max(matches, key=lambda s: (len(wanted.intersection(s.ids())), s.manifest.get("updated", "")))


    # -- content-addressed sets -----------------------------------------------------------------
    def keyed_path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def save_features(self, key: str, matrix, meta: dict | None = None) -> Path | None:
        """Store a feature matrix (float32 ndarray or scipy sparse) as the set of ``key``, its
        rows named by position; ``meta`` (plugin, kind, params, seconds...) goes into the
        manifest. Returns the set's directory (None for a matrix without rows: nothing to keep).

        The manifest is removed first and says the set is complete only with the last shard,
        so a set is only read once every shard is on disk."""
        import scipy.sparse

        rows = matrix.shape[0]
        if rows == 0:
            return None
        path = self.keyed_path(key)
        path.mkdir(parents=True, exist_ok=True)
        (path / MANIFEST).unlink(missing_ok=True)  # the old set stops being valid before any shard changes
        for stale in path.glob("part-*.parquet"):
            stale.unlink(missing_ok=True)
        manifest = {"plugin": "", "kind": None, "params": {}, **jsonable(meta or {}),
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
            feature_set.manifest["complete"] = stop == rows
            feature_set.write_shard(index, _positions(start, stop), matrix[start:stop], [], first_row=start)
        self.arrays.remove(key)  # a matrix of an older cache, now superseded
        return path

    def load_features(self, key: str, rows: int):
        """The feature matrix saved under ``key`` with ``rows`` rows, or None when it is absent,
        incomplete, damaged (a shard not matching its sha256) or another's.

        A matrix that an older version cached as an array (``<key>.npy``/``.npz``) is read as
        before and moved into a set, so no cache is lost to an upgrade."""
        try:
            feature_set = FeatureSet(self.keyed_path(key))
            manifest = feature_set.manifest
            if manifest.get("key") == key and feature_set.complete and manifest.get("rows") == rows:
                ids, matrix = feature_set.read()  # a new, writable array: callers may scale it in place
                if ids == _positions(0, rows):
                    return matrix
        # a missing or damaged manifest or shard (StoreError), or bytes that match their checksum
        # yet do not decode (a file from another pyarrow, a hand-edited set): recomputed, all of them
        except Exception:
            pass
        legacy = self.arrays.load(key)
        if legacy is None or legacy.shape[0] != rows or len(legacy.shape) != 2:
            return None
        legacy = legacy.astype(np.float32, copy=False)  # what a set holds
        try:
            self.save_features(key, legacy, meta=self.arrays.meta(key))
        except OSError:  # a read-only cache is still read
            pass
        return legacy

    # -- the whole store ------------------------------------------------------------------------
    def _files(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file()] if self.root.is_dir() else []

    def info(self, verify: bool = False) -> StoreInfo:
        """What the store holds; ``verify`` also checks every entry's checksums (reads it all).

        A feature set counts once however many shards it has; one without a manifest (its
        save was interrupted) counts as damaged."""
        files = self._files()
        sets = sorted({p.parent for p in files if is_set_file(p)})
        data = [p for p in files if p.suffix in DATA_SUFFIXES.values() and not _is_temp(p)]
        damaged = 0
        if verify:
            for path in data:
                verified = self.arrays.verified(path.stem)
                if verified is None or DATA_SUFFIXES[verified[1]["format"]] != path.suffix:
                    damaged += 1
            damaged += sum(1 for path in sets if not _intact(path))
        return StoreInfo(self.root, len(data) + len(sets), sum(p.stat().st_size for p in files), damaged,
                         sum(1 for p in files if _is_temp(p)), len(sets))

    def clear(self) -> StoreInfo:
        """Delete every set, array and temporary file left by an interrupted write; returns
        what was there."""
        before = self.info()
        if self.root.is_dir():
            for p in sorted(self.root.rglob("*"), reverse=True):
                if p.is_file() and (p.suffix in (*DATA_SUFFIXES.values(), ".json") or is_set_file(p)
                                    or _is_temp(p)):
                    p.unlink()
                elif p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
        return before

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


def _intact(path: Path) -> bool:
    try:
        return FeatureSet(path).intact()
    except StoreError:
        return False
