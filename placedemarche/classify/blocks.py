"""The pieces of a model: a block per extractor (extractor, :class:`BlockScaler`, classifier
head), the heads made from their plugin spec, and how a group's blocks combine."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from placedemarche.features.cache import FeatureCache
from placedemarche.data.catalog import Catalog, TextField
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.features.extraction import extract_features
from placedemarche.classify.finetune import FineTunedImageModel
from placedemarche.core.plugins import create_plugin, get_plugin_class, parse_plugin_spec
from placedemarche.classify.config import TrainConfig


class BlockScaler:
    """Scales one modality's features so blocks of any width weigh alike in a fusion:
    dense features are standardised, sparse ones L2-normalised (standard-scaling sparse
    TF-IDF destroys it), then the block is divided by its mean row norm on the training rows."""

    def fit(self, X):
        import scipy.sparse
        from sklearn.preprocessing import StandardScaler

        self.sparse_ = scipy.sparse.issparse(X)
        self.standard_ = None if self.sparse_ else StandardScaler().fit(np.asarray(X, dtype=np.float64))
        Z = self._scaled(X)
        sq = Z.multiply(Z).sum() if self.sparse_ else float(np.sum(np.square(Z)))
        self.norm_ = math.sqrt(sq / max(Z.shape[0], 1)) or 1.0
        return self

    def _scaled(self, X):
        from sklearn.preprocessing import normalize

        if self.sparse_:
            return normalize(X.tocsr().astype(np.float64))
        return self.standard_.transform(np.asarray(X, dtype=np.float64))

    def transform(self, X):
        return self._scaled(X) / self.norm_


def make_head(config: TrainConfig):
    """A fresh classifier head from ``config.classifier`` (a plugin spec). ``config.C``,
    ``config.class_weight`` (as ``"balanced"``) and ``config.seed`` (as ``random_state``) are
    defaults for the heads whose ``__init__`` takes them; a parameter of the spec wins."""
    name, params = parse_plugin_spec(config.classifier)
    accepted = get_plugin_class("classifier", name)._get_param_names()
    defaults = {"C": config.C, "class_weight": "balanced" if config.class_weight else None,
                "random_state": config.seed}
    return create_plugin("classifier", config.classifier,
                         **{k: v for k, v in defaults.items() if k in accepted and k not in params})


def _head_input(head, X):
    """``X`` as the head takes it: heads that do not accept sparse input get it dense.
    Heads of models saved before heads were plugins are scikit-learn estimators (sparse is fine)."""
    if not getattr(head, "accepts_sparse", True) and hasattr(X, "toarray"):
        return X.toarray()
    return X


def fit_head(head, X, y: np.ndarray):
    """Fit ``head`` on ``X`` and check its ``classes_``: the model reads probability columns
    as the sorted labels (category indices), which is what a head following the contract gives."""
    head.fit(_head_input(head, X), y)
    classes = getattr(head, "classes_", None)
    if classes is None or not np.array_equal(np.asarray(classes), np.unique(y)):
        raise PlaceDeMarcheError(f"classifier head '{getattr(head, 'name', type(head).__name__)}' set classes_ to "
                                 f"{classes!r} after fit, expected the sorted labels it was given: fix the plugin")
    return head


def head_proba(head, X) -> np.ndarray:
    return head.predict_proba(_head_input(head, X))


def _hstack(blocks):
    import scipy.sparse

    if any(scipy.sparse.issparse(b) for b in blocks):
        return scipy.sparse.hstack([scipy.sparse.csr_matrix(b) for b in blocks]).tocsr()
    return np.hstack(blocks)


def _rows(X, idx):
    return X[idx] if not hasattr(X, "tocsr") else X.tocsr()[idx]


@dataclass
class Block:
    """One extractor of a fitted model: a frozen-feature block (extractor, scaler, head) or a
    fine-tuned image block (``network``)."""

    kind: str  # "text" or "image"
    spec: str
    extractor: Any  # the plugin (fitted when it learns from data)
    scaler: BlockScaler | None = None
    head: Any = None
    network: FineTunedImageModel | None = None  # fine-tuned image block
    # The fine-tuned top of a cross-validation fold, which predicts the fold's test rows from
    # their cached bottleneck without running the frozen bottom again. Never saved.
    top: Any = field(default=None, repr=False, compare=False)

    def features(self, items: Sequence, cache: FeatureCache | None):
        """Scaled features of new items (never refits a learning extractor)."""
        if self.extractor.learns_from_data:
            X = self.extractor.transform(list(items))
        else:
            X = extract_features(self.extractor, items, cache=cache).matrix
        return self.scaler.transform(X)


def _items(kind: str, catalog: Catalog, text_field: TextField) -> list:
    return catalog.texts(text_field) if kind == "text" else list(catalog.image_paths)


def _combine(keys: Sequence[str], probas: dict[str, np.ndarray], features: dict[str, Any], head) -> np.ndarray:
    """One group's probabilities from its blocks': the block's own for a single block, the
    fusion head on the concatenated features, or the mean of the blocks' probabilities."""
    if len(keys) == 1:
        return probas[keys[0]]
    if head is not None:
        return head_proba(head, _hstack([features[key] for key in keys]))
    return np.mean([probas[key] for key in keys], axis=0)
