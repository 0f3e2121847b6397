"""The fitted extractor a feature set keeps beside its shards, so a resumed run never refits.

A store may come from shared or object storage, so reading it must not run code the project
does not trust: the fitted plugin is saved with skops as ``fitted.skops`` (never pickled), and
loaded only from the types ``core.trusted`` allows (the built-in plugins, scikit-learn, NumPy,
SciPy) plus the class of the set's own plugin, registered by an installed package (the code
the run is about to call anyway). Built-in learned extractors all save this way: ``bow`` and
``tfidf`` (their scikit-learn vectoriser), ``word2vec`` (word vectors and IDF weights as arrays
and dicts, not the gensim model) and ``sift`` (its MiniBatchKMeans vocabulary and IDF weights).

A plugin skops cannot represent, or one holding a type outside the allow-list, is not saved
(the manifest's ``fit.saved`` says why): resuming its set refits it and recomputes every shard,
since shards of another fit cannot be mixed. So does a set written before skops, whose
``fitted.pkl`` is never unpickled.
"""

from __future__ import annotations

import hashlib

from placedemarche.core.files import atomic_write_bytes
from placedemarche.core.trusted import dumps_trusted, loads_trusted, type_name
from placedemarche.features.store import FITTED as PICKLED_FITTED
from placedemarche.features.store import FeatureSet

FITTED_FILE = "fitted.skops"


def _plugin_class(feature_set: FeatureSet):
    """The registered class of the set's plugin, or None when it is not installed."""
    from placedemarche.core.plugins import get_plugin_class

    try:
        return get_plugin_class(feature_set.manifest["kind"], feature_set.manifest["plugin"])
    except Exception:  # unknown kind or plugin, a damaged manifest: nothing to trust
        return None


def save_fitted(feature_set: FeatureSet, plugin) -> bool:
    """Save the fitted plugin beside the shards, its sha256 in the manifest (resume reuses it).
    False (and nothing saved) when skops cannot represent it with trusted types only."""
    fit = feature_set.manifest.setdefault("fit", {})
    for key in ("sha256", "file", "saved"):
        fit.pop(key, None)
    data, untrusted = dumps_trusted(plugin, [type_name(type(plugin))])
    (feature_set.path / PICKLED_FITTED).unlink(missing_ok=True)  # a set written before skops
    if data is None:
        fit["saved"] = f"not saved (a resumed run refits): {', '.join(untrusted[:3])} cannot be saved without pickle"
    else:
        atomic_write_bytes(feature_set.path / FITTED_FILE, data)
        fit.update(file=FITTED_FILE, sha256=hashlib.sha256(data).hexdigest())
    feature_set.save_manifest()
    return data is not None


def load_fitted(feature_set: FeatureSet):
    """The plugin fitted by an earlier run of this set, or None (absent, damaged, from another
    version of the plugin, or naming a type that is not trusted: the caller refits)."""
    fit = feature_set.manifest.get("fit", {})
    expected = fit.get("sha256")
    cls = _plugin_class(feature_set)
    if fit.get("file") != FITTED_FILE or not expected or cls is None:
        return None
    try:
        data = (feature_set.path / FITTED_FILE).read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != expected:
        return None
    try:
        plugin = loads_trusted(data, [type_name(cls)])
    except Exception:  # an untrusted type, a file from another version of the plugin: refit
        return None
    return plugin if type(plugin) is cls else None
