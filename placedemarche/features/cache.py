"""The keys of content-addressed feature sets, and the feature cache: the user's
content-addressed :class:`~placedemarche.features.store.FeatureStore`.

A key hashes the plugin's class and name, its ``get_params()``, its ``cache_version``, and
a fingerprint of the exact inputs (the texts themselves, or the bytes of every image), so a
changed image, text, parameter or row order never returns stale features. ``pm extract``
keys its sets the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

from placedemarche.core.files import sha256_file
from placedemarche.features.sets import jsonable
from placedemarche.features.store import FeatureStore

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


class FeatureCache(FeatureStore):
    """The feature cache: the content-addressed feature store at ``root`` (``PM_CACHE_DIR`` or
    the user cache dir, made on the first write). It is a :class:`FeatureStore` in every way;
    only its default place differs. ``extract_features`` keeps every extraction there as a
    set named by its :func:`extractor_key`; the evaluator keeps t-SNE maps and cluster labels
    through ``cache.arrays``.

    Usage::

        cache = FeatureCache()
        feats = extract_features(create_plugin("text", "tfidf"), catalog.texts(), cache=cache)
        cache.info(verify=True).damaged  # pm cache info
    """

    def __init__(self, root: str | os.PathLike | None = None):
        super().__init__(root if root else default_cache_dir(), create=True)
