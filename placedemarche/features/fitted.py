"""The fitted extractor a feature set keeps beside its shards, so a resumed run never refits."""

from __future__ import annotations

import hashlib
import pickle

from placedemarche.core.files import atomic_write_bytes
from placedemarche.features.store import FITTED, FeatureSet


def save_fitted(feature_set: FeatureSet, plugin) -> None:
    """Pickle the fitted plugin beside the shards, its sha256 in the manifest (resume reuses it)."""
    data = pickle.dumps(plugin, protocol=pickle.HIGHEST_PROTOCOL)
    atomic_write_bytes(feature_set.path / FITTED, data)
    feature_set.manifest.setdefault("fit", {})["sha256"] = hashlib.sha256(data).hexdigest()
    feature_set.save_manifest()


def load_fitted(feature_set: FeatureSet):
    """The plugin fitted by an earlier run of this set, or None (absent or damaged)."""
    expected = feature_set.manifest.get("fit", {}).get("sha256")
    try:
        data = (feature_set.path / FITTED).read_bytes()
    except OSError:
        return None
    if not expected or hashlib.sha256(data).hexdigest() != expected:
        return None
    try:
        return pickle.loads(data)
    except Exception:  # a pickle from another version of the plugin: refit
        return None
