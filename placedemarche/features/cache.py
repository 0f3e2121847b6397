"""Content-addressed feature cache: one entry per (extractor, its parameters, its inputs).

The key hashes the plugin's class and name, its ``get_params()``, and a fingerprint of the
exact inputs (the texts themselves, or the bytes of every image), so a changed image, text,
parameter or row order never returns stale features. Feature matrices are kept as feature
sets of the store's format (Parquet shards + manifest, :mod:`placedemarche.features.cache_sets`),
other arrays (t-SNE maps, cluster labels) as ``.npy``/``.npz`` files. Files are written
atomically, and an entry is only trusted when its data matches the sha256 recorded for it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from placedemarche.features.cache_sets import feature_set_path, is_set_file, load_feature_set, save_feature_set, verify_feature_set
from placedemarche.core.files import atomic_writer, sha256_file
from placedemarche.features.store import jsonable

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    env = os.environ.get("PM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("placedemarche")) / "features"


def fingerprint_texts(texts: Sequence[str]) -> str:
    digest = hashlib.sha256(b"texts\0")
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def fingerprint_images(paths: Sequence[Path | str | None]) -> str:
    """Hash the bytes of every image, so a renamed copy hits and an edited file misses."""
    digest = hashlib.sha256(b"images\0")
    for path in paths:
        if path is None:
            digest.update(b"\0none\0")
            continue
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def extractor_key(extractor: Any, fingerprint: str) -> str:
    cls = type(extractor)
    payload = {
        "format": CACHE_FORMAT,
        "plugin": getattr(cls, "name", ""),
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "version": getattr(cls, "cache_version", "1"),
        "params": jsonable(extractor.get_params()),
        "inputs": fingerprint,
    }
    # what the parameters leave to the environment (backend "auto": onnx or torch, depending
    # on what is installed) and that changes the features
    runtime = getattr(extractor, "runtime_params", None)
    if callable(runtime):
        payload["runtime"] = jsonable(runtime())
    if getattr(cls, "kind", "") == "text":
        from placedemarche.data.text import resource_state

        payload["nltk"] = resource_state()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class CacheInfo:
    path: Path
    entries: int  # feature sets and array files
    bytes: int
    damaged: int = 0  # counted only by ``info(verify=True)``
    temp_files: int = 0
    feature_sets: int = 0

    @property
    def array_files(self) -> int:
        """``.npy``/``.npz`` entries: maps, labels, and feature matrices not yet migrated."""
        return self.entries - self.feature_sets


#: The data file of an entry, by storage format.
DATA_SUFFIXES = {"dense": ".npy", "sparse": ".npz"}
#: Version of the metadata written beside each data file; other versions load as missing.
ENTRY_VERSION = 2


def _is_temp(path: Path) -> bool:
    # atomic_writer names its temporary files ".<name>.<random>.tmp"; the previous version
    # used ".tmp-<random>.npy": both start with a dot, which cache entries never do
    return path.name.startswith(".")


class FeatureCache:
    """Feature matrices and arrays on disk under ``root`` (``PM_CACHE_DIR`` or the user cache dir).

    A feature matrix (:meth:`save_features`) is a feature set: the directory ``<key>/``
    holding Parquet shards and ``manifest.json``, as in a feature store. Any other array
    (:meth:`save`) is a data file (``<key>.npy`` for a dense array, ``<key>.npz`` for a sparse
    matrix) and ``<key>.json``, written after it, holding the data file's sha256, the array's
    shape and dtype, and the caller's ``meta``. An entry whose metadata is missing, damaged
    or of another version, or whose data does not match it (a truncated copy, a flipped
    bit, a crash between the two writes), loads as missing: the caller recomputes and saves
    over it. Any array works, so other kinds of entries (e.g. 2-D embeddings) can share it.

    Usage::

        cache = FeatureCache()
        cache.save_features(key, matrix, meta={"plugin": "tfidf"})
        matrix = cache.load_features(key, rows=len(texts))  # None when absent or damaged
        cache.save(map_key, xy)
        xy = cache.load(map_key)
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()

    def _base(self, key: str) -> Path:
        return self.root / key[:2] / key

    # -- feature matrices: feature sets ---------------------------------------------------------
    def save_features(self, key: str, matrix, meta: dict | None = None) -> Path | None:
        """Store a feature matrix (float32 ndarray or scipy sparse) as the feature set ``key``;
        returns its directory (None for a matrix without rows: there is nothing to keep)."""
        if matrix.shape[0] == 0:
            return None
        path = save_feature_set(feature_set_path(self.root, key), key, matrix, jsonable(meta or {}))
        self._remove_array(key)  # a matrix of an older version, now superseded
        return path

    def load_features(self, key: str, rows: int):
        """The feature matrix saved under ``key`` with ``rows`` rows, or None (absent, damaged).

        A matrix cached by an older version (a ``.npy``/``.npz`` entry) is read as before
        and moved into the feature-set format, so no cache is lost to an upgrade."""
        matrix = load_feature_set(feature_set_path(self.root, key), key, rows)
        if matrix is not None:
            return matrix
        legacy = self.load(key)
        if legacy is None or legacy.shape[0] != rows or len(legacy.shape) != 2:
            return None
        legacy = legacy.astype(np.float32, copy=False)  # what a new entry holds
        try:
            self.save_features(key, legacy, meta=self._legacy_meta(key))
        except OSError:  # a read-only cache is still read
            pass
        return legacy

    def _legacy_meta(self, key: str) -> dict:
        try:
            entry = json.loads(self._base(key).with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(entry, dict):
            return {}
        meta = entry.get("meta", {}) if "version" in entry else entry
        return meta if isinstance(meta, dict) else {}

    def _remove_array(self, key: str) -> None:
        base = self._base(key)
        for suffix in (".json", *DATA_SUFFIXES.values()):  # metadata first: the entry is invalid at once
            base.with_suffix(suffix).unlink(missing_ok=True)

    # -- other arrays: .npy / .npz files ----------------------------------------------------
    def _read_verified(self, key: str) -> tuple[bytes, dict] | None:
        """The data file's bytes and the entry's metadata, if they agree; else None."""
        base = self._base(key)
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

    def load(self, key: str):
        """The array saved under ``key``, or None when there is none or it is damaged."""
        verified = self._read_verified(key)
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

    def _migrate(self, key: str):
        """An entry of the first cache format (metadata without a version or checksum) that
        decodes completely is kept and given a checksum, so nobody recomputes a whole cache
        after an upgrade; one that does not decode loads as missing."""
        base = self._base(key)
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
        base = self._base(key)
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

    def _files(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file()] if self.root.is_dir() else []

    def info(self, verify: bool = False) -> CacheInfo:
        """What the cache holds; ``verify`` also checks every entry's checksums (reads it all).

        A feature set counts once however many shards it has; one without a manifest (its
        save was interrupted) counts as damaged."""
        files = self._files()
        sets = sorted({p.parent for p in files if is_set_file(p)})
        data = [p for p in files if p.suffix in DATA_SUFFIXES.values() and not _is_temp(p)]
        damaged = 0
        if verify:
            for path in data:
                verified = self._read_verified(path.stem)
                if verified is None or DATA_SUFFIXES[verified[1]["format"]] != path.suffix:
                    damaged += 1
            damaged += sum(1 for path in sets if not verify_feature_set(path))
        return CacheInfo(self.root, len(data) + len(sets), sum(p.stat().st_size for p in files), damaged,
                         sum(1 for p in files if _is_temp(p)), len(sets))

    def clear(self) -> CacheInfo:
        """Delete every entry and temporary file left by an interrupted write; returns what was there."""
        before = self.info()
        if self.root.is_dir():
            for p in sorted(self.root.rglob("*"), reverse=True):
                if p.is_file() and (p.suffix in (*DATA_SUFFIXES.values(), ".json") or is_set_file(p)
                                    or _is_temp(p)):
                    p.unlink()
                elif p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
        return before
