"""Content-addressed feature cache: one file per (extractor, its parameters, its inputs).

The key hashes the plugin's class and name, its ``get_params()``, and a fingerprint of the
exact inputs (the texts themselves, or the bytes of every image), so a changed image, text,
parameter or row order never returns stale features. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

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
        h = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                h.update(chunk)
        digest.update(h.digest())
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def extractor_key(extractor: Any, fingerprint: str) -> str:
    cls = type(extractor)
    payload = {
        "format": CACHE_FORMAT,
        "plugin": getattr(cls, "name", ""),
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "version": getattr(cls, "cache_version", "1"),
        "params": _jsonable(extractor.get_params()),
        "inputs": fingerprint,
    }
    if getattr(cls, "kind", "") == "text":
        from .text import resource_state

        payload["nltk"] = resource_state()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class CacheInfo:
    path: Path
    entries: int
    bytes: int


class FeatureCache:
    """Feature matrices on disk under ``root`` (``PM_CACHE_DIR`` or the user cache dir)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()

    def _paths(self, key: str) -> tuple[Path, Path]:
        base = self.root / key[:2] / key
        return base.with_suffix(".npy"), base.with_suffix(".npz")

    def load(self, key: str):
        dense, sparse = self._paths(key)
        try:
            if dense.is_file():
                return np.load(dense, allow_pickle=False)
            if sparse.is_file():
                import scipy.sparse

                return scipy.sparse.load_npz(sparse)
        except (OSError, ValueError, EOFError):
            return None  # a damaged entry is recomputed and overwritten
        return None

    def save(self, key: str, features, meta: dict | None = None) -> Path:
        import scipy.sparse

        dense, sparse = self._paths(key)
        dense.parent.mkdir(parents=True, exist_ok=True)
        target = sparse if scipy.sparse.issparse(features) else dense
        fd, tmp = tempfile.mkstemp(dir=dense.parent, prefix=".tmp-", suffix=target.suffix)
        try:
            with os.fdopen(fd, "wb") as handle:
                if scipy.sparse.issparse(features):
                    scipy.sparse.save_npz(handle, features.tocsr())
                else:
                    np.save(handle, np.asarray(features), allow_pickle=False)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if meta is not None:
            target.with_suffix(".json").write_text(json.dumps(_jsonable(meta), indent=2))
        return target

    def info(self) -> CacheInfo:
        files = [p for p in self.root.rglob("*") if p.is_file()] if self.root.is_dir() else []
        entries = sum(1 for p in files if p.suffix in (".npy", ".npz"))
        return CacheInfo(self.root, entries, sum(p.stat().st_size for p in files))

    def clear(self) -> CacheInfo:
        """Delete every cached feature file; returns what was there."""
        before = self.info()
        if self.root.is_dir():
            for p in sorted(self.root.rglob("*"), reverse=True):
                if p.is_file() and (p.suffix in (".npy", ".npz", ".json") or p.name.startswith(".tmp-")):
                    p.unlink()
                elif p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
        return before
