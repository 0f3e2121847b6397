"""One feature set: a run of Parquet shards and ``manifest.json``, and how shards are encoded.

A feature set holds one extractor's features for some rows (a catalogue's products in a
store that ``pm extract`` fills, or the inputs of one cached extraction). Shard ``i`` covers
the rows ``[i * shard_rows, (i + 1) * shard_rows)``; rows that gave no features are listed in
the manifest, not in the shard. Every file is written atomically and the manifest after each
shard, with each shard's sha256: a shard is only read once the manifest vouches for its bytes.

Columns: ``id`` (string) and, for dense features, ``features`` (fixed-size list of float32);
for sparse ones (TF-IDF, bag of words) ``indices`` (list of int32) and ``values`` (list of
float32), the number of columns being the manifest's ``dims``.

Usage::

    feature_set = FeatureSet("features/tfidf-0123456789abcdef")
    ids, matrix = feature_set.read(catalog.ids)  # aligned to the requested ids
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.core.files import atomic_write_bytes, atomic_write_text

STORE_FORMAT = 1
MANIFEST = "manifest.json"


def jsonable(value: Any) -> Any:
    """Plugin parameters as plain JSON (sorted keys; anything else by its repr): how a set's
    manifest and a cache key record them."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


class StoreError(PlaceDeMarcheError):
    """A feature store or one of its sets cannot be used as asked."""


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def library_versions(*extra: str) -> dict[str, str]:
    """Versions of the libraries that shape the features, for the manifest (none imported)."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("placedemarche", "numpy", "scipy", "scikit-learn", "pyarrow", *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


# -- encoding shards ----------------------------------------------------------------------
def encode_shard(ids: Sequence[str], matrix, dims: int) -> bytes:
    """Parquet bytes of one shard: ``id`` and the dense ``features`` or sparse ``indices``/``values``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import scipy.sparse

    # items declared non-null: Parquet then writes no definition level per value (1.5x faster)
    def items(value_type):
        return pa.field("item", value_type, nullable=False)

    columns: dict[str, Any] = {"id": pa.array(list(ids), type=pa.string())}
    if matrix is not None and scipy.sparse.issparse(matrix):
        csr = matrix.tocsr()
        csr.sort_indices()
        offsets = pa.array(csr.indptr.astype(np.int32))
        columns["indices"] = pa.ListArray.from_arrays(offsets, pa.array(csr.indices.astype(np.int32)),
                                                      type=pa.list_(items(pa.int32())))
        columns["values"] = pa.ListArray.from_arrays(offsets, pa.array(csr.data.astype(np.float32)),
                                                     type=pa.list_(items(pa.float32())))
    else:
        dense = np.zeros((0, dims), np.float32) if matrix is None else np.asarray(matrix, np.float32)
        flat = pa.array(np.ascontiguousarray(dense).reshape(-1), type=pa.float32())
        columns["features"] = pa.FixedSizeListArray.from_arrays(flat, type=pa.list_(items(pa.float32()), dims))
    buffer = io.BytesIO()
    # no dictionary (float features rarely repeat: it only costs time) and no min/max statistics
    pq.write_table(pa.table(columns), buffer, use_dictionary=False, write_statistics=False)
    return buffer.getvalue()


def decode_shard(data: bytes, storage: str, dims: int) -> tuple[list[str], Any]:
    """``(ids, matrix)`` of a shard's Parquet bytes: float32 ndarray, or CSR when sparse."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data))
    ids = table.column("id").to_pylist()
    if storage == "sparse":
        import scipy.sparse

        indices = table.column("indices").combine_chunks()
        values = table.column("values").combine_chunks()
        indptr = np.asarray(indices.offsets, dtype=np.int64) if len(ids) else np.zeros(1, np.int64)
        matrix = scipy.sparse.csr_matrix(
            (np.asarray(values.flatten(), np.float32), np.asarray(indices.flatten(), np.int32),
             indptr - indptr[0]), shape=(len(ids), dims))
        return ids, matrix
    flat = table.column("features").combine_chunks().flatten()
    return ids, np.asarray(flat, dtype=np.float32).reshape(len(ids), dims)


# -- one feature set ----------------------------------------------------------------------
class FeatureSet:
    """One extractor's features for one catalogue: shards plus ``manifest.json``.

    Usage::

        feature_set = FeatureStore("features/").sets()[0]
        for ids, matrix in feature_set.iter_shards():
            ...
    """

    def __init__(self, path: str | os.PathLike, manifest: dict | None = None):
        self.path = Path(path)
        self.manifest = manifest if manifest is not None else self._load_manifest()

    def _load_manifest(self) -> dict:
        file = self.path / MANIFEST
        try:
            manifest = json.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise StoreError(f"cannot read {file}: {exc.strerror or exc}") from None
        except ValueError:
            raise StoreError(f"{file} is not a feature-set manifest (invalid JSON)") from None
        if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
            raise StoreError(f"{file} is not a feature-set manifest of format {STORE_FORMAT}")
        return manifest

    # -- what it holds
    @property
    def spec(self) -> str:
        return self.manifest["spec"]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def dims(self) -> int | None:
        return self.manifest.get("dims")

    @property
    def failed(self) -> list[dict]:
        """Rows that gave no features: ``{"id": ..., "reason": ...}``, in catalogue order."""
        return [row for shard in self._shards() for row in shard.get("failed", [])]

    @property
    def rows_with_features(self) -> int:
        return sum(shard["features"] for shard in self._shards())

    def _shards(self) -> list[dict]:
        return [s for s in self.manifest.get("shards", []) if s is not None]

    def save_manifest(self) -> None:
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_text(self.path / MANIFEST, json.dumps(self.manifest, indent=1, sort_keys=True))

    # -- shards
    def shard_entry(self, index: int) -> dict | None:
        shards = self.manifest.get("shards", [])
        return shards[index] if index < len(shards) else None

    def intact(self) -> bool:
        """True when the set is complete and every shard matches its sha256 (reads them all)."""
        return self.complete and all(self.shard_ok(i) for i in range(len(self.manifest.get("shards", []))))

    def shard_ok(self, index: int) -> bool:
        """True when shard ``index`` is recorded and its file holds exactly the recorded bytes."""
        return self._verified_bytes(index) is not None

    def _verified_bytes(self, index: int) -> bytes | None:
        entry = self.shard_entry(index)
        if entry is None:
            return None
        if entry["file"] is None:
            return b""
        try:
            data = (self.path / entry["file"]).read_bytes()
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == entry["sha256"] else None

    def write_shard(self, index: int, ids: Sequence[str], matrix, failed: Sequence[tuple[str, str]],
                    first_row: int) -> dict:
        """Write shard ``index`` atomically, then record it (and its sha256) in the manifest."""
        import scipy.sparse

        if matrix is not None and self.manifest.get("dims") is None:
            self.manifest["dims"] = int(matrix.shape[1])
            self.manifest["storage"] = "sparse" if scipy.sparse.issparse(matrix) else "dense"
        dims = self.manifest.get("dims") or 0
        if matrix is not None and matrix.shape[1] != dims:
            raise StoreError(f"{self.spec}: shard {index} has {matrix.shape[1]} columns, the set has {dims}")
        if matrix is not None and scipy.sparse.issparse(matrix) != (self.manifest["storage"] == "sparse"):
            matrix = matrix.toarray() if scipy.sparse.issparse(matrix) else scipy.sparse.csr_matrix(matrix)
        # a shard whose rows all failed has no file: its storage may not be known yet
        data = encode_shard(ids, matrix, dims) if ids else b""
        name = shard_name(index) if ids else None
        if name:
            atomic_write_bytes(self.path / name, data)
        else:
            (self.path / shard_name(index)).unlink(missing_ok=True)
        entry = {"file": name, "first_row": first_row, "rows": len(ids) + len(failed), "features": len(ids),
                 "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                 "failed": [{"id": row_id, "reason": reason} for row_id, reason in failed]}
        shards = self.manifest.setdefault("shards", [])
        shards.extend([None] * (index + 1 - len(shards)))
        shards[index] = entry
        self.save_manifest()
        return entry

    def read_shard(self, index: int) -> tuple[list[str], Any]:
        data = self._verified_bytes(index)
        if data is None:
            raise StoreError(f"{self.path / shard_name(index)} is missing or damaged (its sha256 does not "
                             f"match the manifest): run pm extract again to recompute it")
        storage, dims = self.manifest.get("storage", "dense"), self.manifest.get("dims") or 0
        if not data:
            import scipy.sparse

            return [], scipy.sparse.csr_matrix((0, dims), dtype=np.float32) if storage == "sparse" \
                else np.zeros((0, dims), np.float32)
        return decode_shard(data, storage, dims)

    def _check_complete(self) -> None:
        if not self.complete:
            raise StoreError(f"feature set {self.path} ('{self.spec}') is incomplete (interrupted "
                             "extraction): run the same pm extract again to finish it")

    def iter_shards(self) -> Iterator[tuple[list[str], Any]]:
        """``(ids, matrix)`` of each shard in catalogue order: one shard in memory at a time."""
        self._check_complete()
        for index in range(len(self.manifest.get("shards", []))):
            yield self.read_shard(index)

    def ids(self) -> list[str]:
        """Ids of the rows that have features, in catalogue order (reads the id column only)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._check_complete()
        found: list[str] = []
        for index in range(len(self.manifest.get("shards", []))):
            data = self._verified_bytes(index)
            if data is None:
                self.read_shard(index)  # raises the damaged-shard error
            if data:
                found.extend(pq.read_table(pa.BufferReader(data), columns=["id"]).column("id").to_pylist())
        return found

    def read(self, ids: Sequence[str] | None = None) -> tuple[list[str], Any]:
        """``(ids, matrix)``: every row, or the rows of ``ids`` that have features, in that order.

        Each shard is decoded in turn and its wanted rows copied to their place, so memory
        holds the result and one shard, never two copies of the set."""
        import scipy.sparse

        sparse, dims = self.manifest.get("storage") == "sparse", self.dims or 0
        if ids is None:
            return self._read_all(sparse, dims)
        stored = self.ids()
        position = {row_id: i for i, row_id in enumerate(stored)}
        wanted = [row_id for row_id in ids if row_id in position]
        source_rows = np.fromiter((position[row_id] for row_id in wanted), dtype=np.int64, count=len(wanted))
        # where each stored row goes in the result (-1: not asked for)
        target = np.full(len(stored), -1, dtype=np.int64)
        target[source_rows] = np.arange(len(wanted), dtype=np.int64)
        dense = None if sparse else np.zeros((len(wanted), dims), np.float32)
        pieces, placed = [], []
        start = 0
        for _, matrix in self.iter_shards():
            where = target[start:start + matrix.shape[0]]
            local = np.flatnonzero(where >= 0)
            if sparse:
                pieces.append(matrix[local])
                placed.append(where[local])
            else:
                dense[where[local]] = matrix[local]
            start += matrix.shape[0]
        if not sparse:
            return list(wanted), dense
        if not pieces:
            return list(wanted), scipy.sparse.csr_matrix((0, dims), dtype=np.float32)
        stacked = scipy.sparse.vstack(pieces, format="csr")
        order = np.empty(len(wanted), dtype=np.int64)
        order[np.concatenate(placed)] = np.arange(len(wanted), dtype=np.int64)
        return list(wanted), stacked[order]

    def _read_all(self, sparse: bool, dims: int) -> tuple[list[str], Any]:
        """Every row in stored order, each shard read once (``read(ids)`` first needs the ids)."""
        import scipy.sparse

        found: list[str] = []
        pieces = []
        dense = None if sparse else np.empty((self.rows_with_features, dims), np.float32)
        for shard_ids, matrix in self.iter_shards():
            if sparse:
                pieces.append(matrix)
            else:
                dense[len(found):len(found) + len(shard_ids)] = matrix
            found.extend(shard_ids)
        if len(found) != self.rows_with_features:
            raise StoreError(f"{self.path}: the shards hold {len(found)} rows, the manifest says "
                             f"{self.rows_with_features}: run pm extract again to recompute the set")
        if not sparse:
            return found, dense
        if not pieces:
            return found, scipy.sparse.csr_matrix((0, dims), dtype=np.float32)
        return found, scipy.sparse.vstack(pieces, format="csr")

    def __repr__(self) -> str:
        return f"FeatureSet({str(self.path)!r}, spec={self.manifest.get('spec')!r})"
