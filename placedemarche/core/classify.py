"""Supervised classification: frozen-feature heads and fine-tuned CNNs, stratified k-fold
cross-validation, a saved model directory, and prediction on new products.

A model has one *block* per extractor: a text or image extractor plugin + a scaler + a
classifier head (frozen features), or a fine-tuned Keras network (image only). Several
extractors of one modality may be combined (``text=["tfidf", "bert"]``). The blocks combine
into one prediction per *group* of modalities, ``text``, ``image`` and ``text+image``: either
by a head on the concatenated scaled features (``fusion="concat"``) or by averaging the
blocks' probabilities (``"mean"``). The groups of one modality are kept, so a product lacking
its image or its text is predicted from what it has.

Extractors that learn from data (TF-IDF, BoW, Word2Vec, SIFT visual words) are fitted inside
each training fold; the others' features are computed once on the whole catalogue (through
the feature cache), which leaks nothing since they learn nothing from it.

Usage::

    from placedemarche.core.catalog import load_catalog
    from placedemarche.core.classify import TrainConfig, train, load_model

    catalog = load_catalog("shared/data/flipkart").validated()
    result = train(catalog, TrainConfig(text="tfidf", image="mobilenet:alpha=0.75", folds=5),
                   out="models/flipkart")
    print(result.summary["mean"]["accuracy"])
    model = load_model("models/flipkart")
    categories = model.predict(load_catalog("new.csv"))
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import platform
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .cache import FeatureCache
from .catalog import Catalog, TextField, image_problem
from .errors import PlaceDeMarcheError
from .features import extract_features
from .finetune import BackboneSplit, FineTunedImageModel, FineTuneConfig, train_top
from .plugins import create_plugin
from .progress import task

MODEL_FORMAT = 1
CLASSIFIERS = ("logreg", "svm", "rf", "knn", "mlp")
FUSIONS = ("concat", "mean")
MODEL_FILE = "model.json"
OBJECTS_FILE = "model.joblib"
NETWORK_FILE = "finetuned.keras"


class ModelError(PlaceDeMarcheError):
    """A saved model directory cannot be used: missing, damaged, or from another version."""


class ModelWarning(UserWarning):
    """A saved model directory is usable but lacks a safeguard (e.g. saved before checksums)."""


def _spec_list(value: str | Sequence[str] | None) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if v]


@dataclass
class TrainConfig:
    """What to train and how to evaluate it.

    Attributes:
        text: text extractor spec (``"tfidf"``, ``"bert"``), a list of several, or None.
        image: image extractor spec (``"mobilenet:alpha=0.75"``), a list of several, or None;
            with ``finetune`` one Keras backbone that is fine-tuned instead of used frozen.
        text_field: which product text the text extractors read: name, description or both.
        classifier: head on frozen features: logreg (default), svm, rf, knn, mlp.
        C: inverse regularisation of logreg and svm. Every block is scaled to unit mean row
            norm, so one value suits dense CNN features and sparse TF-IDF alike (10 measured
            best among 1, 10, 100 on the Flipkart folds; accuracy moves by under 0.01).
        fusion: how several blocks combine: ``concat`` (one head on the blocks' concatenated
            features) or ``mean`` (average of the blocks' probabilities, each extractor voting
            with the same weight). A fine-tuned image block always combines by ``mean``.
        folds: stratified folds of the cross-validation (0: train only, no evaluation).
        seed: seed of the folds and of the heads.
        class_weight: weigh classes inversely to their frequency.
        finetune: fine-tuning settings (``FineTuneConfig``) when the image block is fine-tuned.
    """

    text: str | list[str] | None = None
    image: str | list[str] | None = None
    text_field: TextField = "both"
    classifier: str = "logreg"
    C: float = 10.0
    fusion: str = "concat"
    folds: int = 5
    seed: int = 0
    class_weight: bool = False
    finetune: FineTuneConfig | None = None

    def check(self) -> None:
        if not self.text_specs and not self.image_specs:
            raise PlaceDeMarcheError("nothing to train on: give a text and/or an image extractor")
        for option, specs in (("--text", self.text_specs), ("--image", self.image_specs)):
            twice = sorted({spec for spec in specs if specs.count(spec) > 1})
            if twice:
                raise PlaceDeMarcheError(f"{option} {twice[0]} is given twice: give each extractor once")
        if self.classifier not in CLASSIFIERS:
            raise PlaceDeMarcheError(
                f"unknown classifier '{self.classifier}': use one of {', '.join(CLASSIFIERS)}")
        if self.fusion not in FUSIONS:
            raise PlaceDeMarcheError(f"unknown fusion '{self.fusion}': use {' or '.join(FUSIONS)}")
        if self.folds == 1 or self.folds < 0:
            raise PlaceDeMarcheError(f"--folds must be 0 (no evaluation) or at least 2, got {self.folds}")
        if self.C <= 0:
            raise PlaceDeMarcheError(f"C must be positive, got {self.C}")
        if self.finetune is not None:
            if len(self.image_specs) != 1:
                raise PlaceDeMarcheError("fine-tuning needs an image backbone: give one --image "
                                         f"(got {len(self.image_specs)})")
            self.finetune.check()

    @property
    def text_specs(self) -> list[str]:
        return _spec_list(self.text)

    @property
    def image_specs(self) -> list[str]:
        return _spec_list(self.image)

    @property
    def modalities(self) -> list[str]:
        return [kind for kind, specs in (("text", self.text_specs), ("image", self.image_specs)) if specs]

    @property
    def blocks(self) -> list[tuple[str, str, str]]:
        """``(key, kind, spec)`` of every block. The key is the kind (``"text"``) when the
        kind has one extractor, ``"kind:spec"`` (``"text:tfidf"``) when it has several."""
        out = []
        for kind, specs in (("text", self.text_specs), ("image", self.image_specs)):
            out += [(kind if len(specs) == 1 else f"{kind}:{spec}", kind, spec) for spec in specs]
        return out

    @property
    def groups(self) -> dict[str, list[str]]:
        """The predictions the model makes, named by the modalities they use (``"text"``,
        ``"image"``, ``"text+image"``), with the keys of the blocks each combines."""
        groups = {kind: [key for key, k, _ in self.blocks if k == kind] for kind in self.modalities}
        if len(groups) == 2:
            groups["text+image"] = groups["text"] + groups["image"]
        return groups

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["finetune"] = self.finetune.to_dict() if self.finetune else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        if data.get("finetune"):
            data["finetune"] = FineTuneConfig(**data["finetune"])
        return cls(**data)


# -- the pieces of a model -------------------------------------------------------------
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


def make_head(classifier: str, C: float, seed: int, class_weight: bool):
    """A fresh scikit-learn classifier with ``predict_proba``."""
    weight = "balanced" if class_weight else None
    if classifier == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=5000, class_weight=weight, random_state=seed)
    if classifier == "svm":
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        # probabilities from a 3-fold sigmoid calibration (SVC(probability=True) is deprecated)
        return CalibratedClassifierCV(SVC(C=C, kernel="rbf", class_weight=weight, random_state=seed),
                                      cv=3, ensemble=False)
    if classifier == "rf":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=500, class_weight=weight, random_state=seed, n_jobs=-1)
    if classifier == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=10, weights="distance")
    if classifier == "mlp":
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, learning_rate_init=1e-2, max_iter=500,
                             random_state=seed)
    raise PlaceDeMarcheError(f"unknown classifier '{classifier}': use one of {', '.join(CLASSIFIERS)}")


def _hstack(blocks):
    import scipy.sparse

    if any(scipy.sparse.issparse(b) for b in blocks):
        return scipy.sparse.hstack([scipy.sparse.csr_matrix(b) for b in blocks]).tocsr()
    return np.hstack(blocks)


@dataclass
class Block:
    """One modality of a fitted model."""

    kind: str  # "text" or "image"
    spec: str
    extractor: Any  # the plugin (fitted when it learns from data)
    scaler: BlockScaler | None = None
    head: Any = None
    network: FineTunedImageModel | None = None  # fine-tuned image block

    def features(self, items: Sequence, cache: FeatureCache | None):
        """Scaled features of new items (never refits a learning extractor)."""
        if self.extractor.learns_from_data:
            X = self.extractor.transform(list(items))
        else:
            X = extract_features(self.extractor, items, cache=cache).matrix
        return self.scaler.transform(X)

    def predict_proba(self, items: Sequence, cache: FeatureCache | None) -> np.ndarray:
        if self.network is not None:
            return self.network.predict_proba(items)
        return self.head.predict_proba(self.features(items, cache))


def _items(kind: str, catalog: Catalog, text_field: TextField) -> list:
    return catalog.texts(text_field) if kind == "text" else list(catalog.image_paths)


def _combine(keys: Sequence[str], probas: dict[str, np.ndarray], features: dict[str, Any], head) -> np.ndarray:
    """One group's probabilities from its blocks': the block's own for a single block, the
    fusion head on the concatenated features, or the mean of the blocks' probabilities."""
    if len(keys) == 1:
        return probas[keys[0]]
    if head is not None:
        return head.predict_proba(_hstack([features[key] for key in keys]))
    return np.mean([probas[key] for key in keys], axis=0)


# -- the fitted model ----------------------------------------------------------------------
@dataclass
class ClassifierModel:
    """A trained classifier: its blocks (one per extractor), the fusion heads of the groups
    that combine several blocks, the categories and where it came from.

    ``predict``/``predict_proba`` take a :class:`Catalog` (or, for a single-modality model,
    a list of texts or image paths).
    """

    config: TrainConfig
    categories: list[str]
    blocks: dict[str, Block]
    fusion_heads: dict[str, Any] = field(default_factory=dict)  # group -> head (concat fusion)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    # the group predictions use by default: the best on the folds (None: the fused one)
    default_group: str | None = None

    @property
    def group(self) -> str:
        """The group that predicts by default: the one that scored best in cross-validation
        (the fused one on a tie, or when the model was trained without folds)."""
        return self.resolve_group(None)

    def resolve_group(self, group: str | None) -> str:
        """``group`` checked against the model's groups; None gives the default group."""
        groups = list(self.config.groups)
        group = group or self.default_group or groups[-1]  # the last group uses every modality
        if group not in groups:
            raise PlaceDeMarcheError(f"this model has no group '{group}': use one of {', '.join(groups)}")
        return group

    @property
    def label_encoder(self):
        from sklearn.preprocessing import LabelEncoder

        encoder = LabelEncoder()
        encoder.classes_ = np.array(self.categories)
        return encoder

    def _as_catalog(self, data) -> Catalog:
        if isinstance(data, Catalog):
            return data
        items = list(data)
        kinds = self.config.modalities
        if len(kinds) != 1:
            raise PlaceDeMarcheError("this model uses text and images: pass a Catalog")
        n = len(items)
        ids = [str(i) for i in range(n)]
        if kinds[0] == "text":
            texts, blank = [str(t) for t in items], [""] * n
            in_description = self.config.text_field == "description"
            return Catalog(ids=ids, names=blank if in_description else texts,
                           descriptions=texts if in_description else blank, image_paths=[None] * n)
        return Catalog(ids=ids, names=[""] * n, descriptions=[""] * n,
                       image_paths=[None if p is None else Path(p) for p in items])

    def problems(self, catalog: Catalog) -> dict[str, list[str | None]]:
        """For each modality of the model, why each product's text or image cannot be used
        (``"no usable text"``, ``"image file not found: PATH"``, ...), None where it can."""
        out: dict[str, list[str | None]] = {}
        if "text" in self.config.modalities:
            out["text"] = [None if t.strip() else "no usable text" for t in catalog.texts(self.config.text_field)]
        if "image" in self.config.modalities:
            out["image"] = [image_problem(p) for p in catalog.image_paths]
        return out

    def available(self, catalog: Catalog) -> dict[str, np.ndarray]:
        """For each modality of the model, which products have it usable (non-empty text,
        an image file that decodes)."""
        return {kind: np.array([p is None for p in reasons], dtype=bool)
                for kind, reasons in self.problems(catalog).items()}

    def predict_details(self, data, cache: FeatureCache | None = None,
                        group: str | None = None) -> tuple[np.ndarray, list[str]]:
        """Probabilities ``(n, n_categories)`` and the modality used for each product
        (``"text+image"``, ``"text"``, ``"image"`` or ``"none"``: a row of NaN).

        Products are predicted by ``group`` (default: :attr:`group`); a product lacking
        every modality of that group is predicted from the modalities it has.
        """
        catalog = self._as_catalog(data)
        n = len(catalog)
        proba = np.full((n, len(self.categories)), np.nan)
        chosen = self.resolve_group(group).split("+")
        available = self.available(catalog)
        has_chosen = np.logical_or.reduce([available[k] for k in chosen])
        # a modality outside the chosen group is used only by products that lack the group's
        has = {kind: mask & (has_chosen if kind in chosen else ~has_chosen) for kind, mask in available.items()}
        rows = {kind: np.flatnonzero(mask) for kind, mask in has.items()}
        probas: dict[str, np.ndarray] = {}
        features: dict[str, Any] = {}
        for key, block in self.blocks.items():
            if len(rows[block.kind]) == 0:
                continue
            items = _items(block.kind, catalog.subset(rows[block.kind]), self.config.text_field)
            if block.network is not None:
                probas[key] = block.network.predict_proba(items)
            else:
                features[key] = block.features(items, cache)
                probas[key] = block.head.predict_proba(features[key])
        used = ["none"] * n
        for group, keys in self.config.groups.items():
            kinds = group.split("+")
            # the products whose usable modalities are exactly this group's
            mask = np.logical_and.reduce([has[k] if k in kinds else ~has[k] for k in has])
            selected = np.flatnonzero(mask)
            if len(selected) == 0:
                continue
            sub_probas, sub_features = {}, {}
            for key in keys:
                at = np.searchsorted(rows[self.blocks[key].kind], selected)
                sub_probas[key] = probas[key][at]
                if key in features:
                    sub_features[key] = _rows(features[key], at)
            proba[selected] = _combine(keys, sub_probas, sub_features, self.fusion_heads.get(group))
            for r in selected:
                used[r] = group
        return proba, used

    def predict_proba(self, data, cache: FeatureCache | None = None, group: str | None = None) -> np.ndarray:
        """Probabilities per category (columns in ``categories`` order); NaN rows for products
        with no usable modality."""
        return self.predict_details(data, cache, group)[0]

    def predict(self, data, cache: FeatureCache | None = None, group: str | None = None) -> list[str | None]:
        """The predicted category of each product (None where no modality is usable)."""
        proba = self.predict_proba(data, cache, group)
        return [None if np.isnan(row).all() else self.categories[int(np.argmax(row))] for row in proba]

    def save(self, directory: str | Path) -> Path:
        return save_model(self, directory)


# -- fitting -----------------------------------------------------------------------------
@dataclass
class _Precomputed:
    """Whole-catalogue inputs that learn nothing from labels: frozen features, bottlenecks."""

    features: dict[str, Any] = field(default_factory=dict)  # block key -> matrix (frozen extractors)
    bottleneck: np.ndarray | None = None  # (views, n, ...) for a fine-tuned image block
    split: BackboneSplit | None = None
    feature_info: dict[str, Any] = field(default_factory=dict)


def _rows(X, idx):
    return X[idx] if not hasattr(X, "tocsr") else X.tocsr()[idx]


def _fit_blocks(config: TrainConfig, catalog: Catalog, y: np.ndarray, train: np.ndarray,
                pre: _Precomputed, n_classes: int) -> tuple[dict[str, Block], dict[str, Any], list]:
    """Fit every block on the ``train`` rows; returns the blocks and their scaled training
    features by key (for the fusion heads), and the fine-tuning history."""
    from sklearn.base import clone

    blocks: dict[str, Block] = {}
    scaled: dict[str, Any] = {}
    history: list = []
    for key, kind, spec in config.blocks:
        if kind == "image" and config.finetune is not None:
            B = pre.bottleneck[:, train]
            top, history = train_top(pre.split, B, y[train], n_classes, config.finetune)
            blocks[key] = Block(kind, spec, pre.split.backbone,
                                network=FineTunedImageModel.from_parts(pre.split, top))
            blocks[key]._top = top  # type: ignore[attr-defined]  # for fast fold predictions
            continue
        template = create_plugin(kind, spec)
        if template.learns_from_data:
            extractor = clone(template)
            items = _items(kind, catalog.subset(train), config.text_field)
            X = extractor.fit_transform(items)
        else:
            extractor = template
            X = _rows(pre.features[key], train)
        scaler = BlockScaler().fit(X)
        Z = scaler.transform(X)
        head = make_head(config.classifier, config.C, config.seed, config.class_weight).fit(Z, y[train])
        blocks[key] = Block(kind, spec, extractor, scaler, head)
        scaled[key] = Z
    return blocks, scaled, history


def _fusion_heads(config: TrainConfig, blocks: dict[str, Block], scaled: dict[str, Any],
                  y: np.ndarray) -> dict[str, Any]:
    """With ``concat`` fusion, one head per group of several frozen-feature blocks."""
    heads = {}
    if config.fusion != "concat":
        return heads
    for group, keys in config.groups.items():
        if len(keys) > 1 and all(blocks[key].network is None for key in keys):
            heads[group] = make_head(config.classifier, config.C, config.seed, config.class_weight).fit(
                _hstack([scaled[key] for key in keys]), y)
    return heads


def _fold_proba(config: TrainConfig, catalog: Catalog, blocks: dict[str, Block], fusion_heads: dict[str, Any],
                test: np.ndarray, pre: _Precomputed) -> dict[str, np.ndarray]:
    """Probabilities on the test rows: of each extractor (when a modality has several) and
    of each group (text, image, text+image)."""
    probas: dict[str, np.ndarray] = {}
    features: dict[str, Any] = {}
    for key, block in blocks.items():
        if block.network is not None:
            top = block._top  # type: ignore[attr-defined]
            probas[key] = np.asarray(top.predict(pre.bottleneck[0, test].astype(np.float32), verbose=0))
            continue
        if block.extractor.learns_from_data:
            X = block.extractor.transform(_items(block.kind, catalog.subset(test), config.text_field))
        else:
            X = _rows(pre.features[key], test)
        features[key] = block.scaler.transform(X)
        probas[key] = block.head.predict_proba(features[key])
    groups = config.groups
    out = {key: P for key, P in probas.items() if key not in groups}
    for group, keys in groups.items():
        out[group] = _combine(keys, probas, features, fusion_heads.get(group))
    return out


def _precompute(config: TrainConfig, catalog: Catalog, cache: FeatureCache | None) -> _Precomputed:
    pre = _Precomputed()
    for key, kind, spec in config.blocks:
        if kind == "image" and config.finetune is not None:
            started = time.perf_counter()
            pre.split = BackboneSplit(create_plugin("image", spec), config.finetune.unfreeze)
            pre.bottleneck = pre.split.bottleneck(catalog.image_paths, config.finetune.n_views(),
                                                  config.finetune.seed)
            pre.feature_info[key] = {"spec": spec, "fine_tuned": True,
                                     "bottleneck_shape": list(pre.split.bottleneck_shape),
                                     "views": int(pre.bottleneck.shape[0]),
                                     "seconds": round(time.perf_counter() - started, 2)}
            continue
        extractor = create_plugin(kind, spec)
        info = {"spec": spec, "learns_from_data": bool(extractor.learns_from_data)}
        if not extractor.learns_from_data:
            feats = extract_features(extractor, _items(kind, catalog, config.text_field), cache=cache)
            pre.features[key] = feats.matrix
            info.update(dims=int(feats.matrix.shape[1]), cached=feats.from_cache,
                        seconds=round(feats.seconds, 2))
        pre.feature_info[key] = info
    return pre


def _check_catalog(catalog: Catalog, config: TrainConfig) -> tuple[list[str], np.ndarray]:
    where = catalog.source or "catalogue"
    if len(catalog) == 0:
        raise PlaceDeMarcheError(f"{where} is empty: no product to train on")
    if catalog.labels is None:
        raise PlaceDeMarcheError(f"{where} has no category column: training needs labelled products "
                                 "(name it with --label-column)")
    empty = [catalog.ids[i] for i, label in enumerate(catalog.labels) if not label.strip()]
    if empty:
        raise PlaceDeMarcheError(f"{where}: {len(empty)} product(s) have no category (first: {empty[0]})")
    categories = catalog.categories
    if len(categories) < 2:
        raise PlaceDeMarcheError(f"{where} has {len(categories)} category; need at least 2 to classify")
    index = {c: i for i, c in enumerate(categories)}
    y = np.array([index[label] for label in catalog.labels])
    if config.folds:
        counts = np.bincount(y, minlength=len(categories))
        small = [(categories[i], int(n)) for i, n in enumerate(counts) if n < config.folds]
        if small:
            fewest = min(n for _, n in small)
            hint = f"use --folds {fewest} or fewer" if fewest >= 2 else "add products or remove that category"
            listed = ", ".join(f"'{c}' has {n}" for c, n in small[:3])
            raise PlaceDeMarcheError(
                f"{where}: {listed} product(s), fewer than the {config.folds} folds: {hint}"
                " (or --folds 0 to train without evaluation)")
    return categories, y


# -- training and cross-validation ------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` returns: the fitted model and the cross-validation figures."""

    model: ClassifierModel
    summary: dict[str, Any]
    folds: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)

    def predict(self, data, cache: FeatureCache | None = None):
        return self.model.predict(data, cache)

    def predict_proba(self, data, cache: FeatureCache | None = None):
        return self.model.predict_proba(data, cache)


def train(catalog: Catalog, config: TrainConfig, *, cache: FeatureCache | None = None,
          out: str | Path | None = None) -> TrainResult:
    """Cross-validate (``config.folds`` stratified folds), then fit on all products.

    The catalogue must be labelled and validated for the modalities used. When ``out`` is
    given, the model directory is written there with the evaluation's report files
    (metrics.json, folds.csv, classification_report.txt, confusion matrix PNG + CSV, and
    learning curves for a fine-tuned image block).
    """
    config.check()
    categories, y = _check_catalog(catalog, config)
    n_classes = len(categories)
    pre = _precompute(config, catalog, cache)

    folds: list[dict[str, Any]] = []
    oof: dict[str, np.ndarray] = {}
    histories: list[list[dict]] = []
    if config.folds:
        from sklearn.model_selection import StratifiedKFold

        splitter = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
        with task("cross-validation", total=config.folds) as bar:
            for number, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(len(y)), y), start=1):
                started = time.perf_counter()
                blocks, scaled, history = _fit_blocks(config, catalog, y, train_idx, pre, n_classes)
                fusion = _fusion_heads(config, blocks, scaled, y[train_idx])
                probas = _fold_proba(config, catalog, blocks, fusion, test_idx, pre)
                seconds = time.perf_counter() - started
                row = {"fold": number, "train": int(len(train_idx)), "test": int(len(test_idx)),
                       "seconds": round(seconds, 2)}
                for name, P in probas.items():
                    oof.setdefault(name, np.zeros((len(y), n_classes)))[test_idx] = P
                    row.update({f"{name}:{k}": v for k, v in _scores(y[test_idx], P).items()})
                folds.append(row)
                if history:
                    histories.append(history)
                bar.advance(1)

    started = time.perf_counter()
    blocks, scaled, history = _fit_blocks(config, catalog, y, np.arange(len(y)), pre, n_classes)
    fusion = _fusion_heads(config, blocks, scaled, y)
    for block in blocks.values():
        block.__dict__.pop("_top", None)
    final_seconds = time.perf_counter() - started
    summary = _summary(config, catalog, categories, y, folds, oof, pre, final_seconds)
    model = ClassifierModel(config, categories, blocks, fusion, metrics=summary, versions=library_versions(),
                            default_group=summary.get("best_group"))
    result = TrainResult(model, summary, folds)
    if out is not None:
        save_model(model, out)
        result.files = write_training_report(result, Path(out), y, oof, histories, history)
    return result


def _scores(y_true: np.ndarray, P: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    pred = np.argmax(P, axis=1)
    return {"accuracy": round(float(accuracy_score(y_true, pred)), 4),
            "macro_f1": round(float(f1_score(y_true, pred, average="macro")), 4)}


def _summary(config, catalog, categories, y, folds, oof, pre, final_seconds) -> dict[str, Any]:
    from sklearn.metrics import classification_report, confusion_matrix

    main = "text+image" if len(config.modalities) == 2 else config.modalities[0]
    summary: dict[str, Any] = {
        "config": config.to_dict(),
        "catalog": {"source": catalog.source, "products": len(catalog), "categories": categories,
                    "dropped": len(catalog.dropped)},
        "features": pre.feature_info,
        "main": main,
        "folds": config.folds,
        "final_fit_seconds": round(final_seconds, 2),
        "results": {},
    }
    if not folds:
        return summary
    for name in oof:
        per_fold = {m: [f[f"{name}:{m}"] for f in folds] for m in ("accuracy", "macro_f1")}
        pred = np.argmax(oof[name], axis=1)
        report = classification_report(y, pred, labels=range(len(categories)), target_names=categories,
                                       output_dict=True, zero_division=0)
        summary["results"][name] = {
            **{f"{m}_mean": round(float(np.mean(v)), 4) for m, v in per_fold.items()},
            **{f"{m}_sd": round(float(np.std(v)), 4) for m, v in per_fold.items()},
            "per_class_f1": {c: round(report[c]["f1-score"], 4) for c in categories},
            "confusion_matrix": confusion_matrix(y, pred, labels=range(len(categories))).tolist(),
        }
    seconds = [f["seconds"] for f in folds]
    summary["fold_seconds_mean"] = round(float(np.mean(seconds)), 2)
    summary["mean"] = {"accuracy": summary["results"][main]["accuracy_mean"],
                       "accuracy_sd": summary["results"][main]["accuracy_sd"],
                       "macro_f1": summary["results"][main]["macro_f1_mean"],
                       "macro_f1_sd": summary["results"][main]["macro_f1_sd"]}
    summary.update(_best_group(config, summary["results"]))
    return summary


def _best_group(config: TrainConfig, results: dict[str, Any]) -> dict[str, str]:
    """The group ``pm predict`` uses by default: the best mean accuracy on the folds (then
    macro-F1). A fused group that does worse than one of its modalities is reported rather
    than used; on a tie the fused group is kept, since it uses everything a product has."""
    groups = list(config.groups)
    fused = groups[-1]
    best = max(groups, key=lambda g: (results[g]["accuracy_mean"], results[g]["macro_f1_mean"], g == fused))
    out = {"best_group": best}
    if best != fused:
        a, b = results[fused], results[best]
        out["fusion_warning"] = (
            f"{fused} scored below {best} on the folds (accuracy {a['accuracy_mean']:.3f} ± {a['accuracy_sd']:.3f} "
            f"vs {b['accuracy_mean']:.3f} ± {b['accuracy_sd']:.3f}): pm predict uses {best} by default "
            f"(--group {fused} to use the fused model)")
    return out


# -- report files ------------------------------------------------------------------------
def write_training_report(result: TrainResult, out: Path, y: np.ndarray, oof: dict[str, np.ndarray],
                          histories: list[list[dict]], final_history: list[dict]) -> dict[str, str]:
    from sklearn.metrics import classification_report

    from .files import atomic_write_text
    from .report import plot_confusion

    files = {"metrics": "metrics.json"}
    summary = result.summary
    categories = result.model.categories
    if result.folds:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(result.folds[0]))
        writer.writeheader()
        writer.writerows(result.folds)
        atomic_write_text(out / "folds.csv", buffer.getvalue())
        files["folds"] = "folds.csv"
        main = summary["main"]
        pred = np.argmax(oof[main], axis=1)
        text = [f"{name}: {classification_report(y, np.argmax(P, axis=1), labels=range(len(categories)), target_names=categories, digits=3, zero_division=0)}"
                for name, P in oof.items()]
        atomic_write_text(out / "classification_report.txt",
                          f"Out-of-fold predictions, {len(result.folds)} stratified folds\n\n" + "\n".join(text))
        files["classification_report"] = "classification_report.txt"
        matrix = np.array(summary["results"][main]["confusion_matrix"])
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["true \\ predicted", *categories])
        for category, row in zip(categories, matrix):
            writer.writerow([category, *map(int, row)])
        atomic_write_text(out / "confusion_matrix.csv", buffer.getvalue())
        plot_confusion(matrix, categories,
                       f"{main}: out-of-fold predictions, {len(result.folds)} folds "
                       f"(accuracy {summary['mean']['accuracy']:.3f})", out / "confusion_matrix.png",
                       xlabel="predicted category")
        files.update(confusion_csv="confusion_matrix.csv", confusion_png="confusion_matrix.png")
        del pred
    if histories or final_history:
        plot_learning_curves(histories or [final_history], out / "learning_curves.png")
        atomic_write_text(out / "learning_curves.json",
                          json.dumps({"folds": histories, "final": final_history}, indent=1))
        files.update(learning_curves="learning_curves.png", learning_curves_data="learning_curves.json")
    from .html_report import write_training_html

    files["html"] = write_training_html(result, out, histories, final_history).name
    summary["files"] = files
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2))
    return files


def plot_learning_curves(histories: list[list[dict]], path: Path) -> None:
    """Loss and accuracy per epoch (training and validation), one line per fold, with the
    phase change (head -> fine-tuning) marked."""
    from .report import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for metric, ax in zip(("loss", "accuracy"), axes):
        for number, history in enumerate(histories, start=1):
            epochs = range(1, len(history) + 1)
            line, = ax.plot(epochs, [h.get(metric, np.nan) for h in history], lw=1,
                            label=f"fold {number} train" if len(histories) > 1 else "train")
            if any(f"val_{metric}" in h for h in history):
                ax.plot(epochs, [h.get(f"val_{metric}", np.nan) for h in history], lw=1, ls="--",
                        color=line.get_color(), label=f"fold {number} validation" if len(histories) > 1 else "validation")
            switch = next((i for i, h in enumerate(history) if h["phase"] == "finetune"), None)
            if switch:
                ax.axvline(switch + 0.5, color="grey", lw=0.6, ls=":")
        ax.set_xlabel("epoch (dotted line: top layers unfrozen)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("Fine-tuning learning curves")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- saving and loading ------------------------------------------------------------------
def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("placedemarche", "scikit-learn", "numpy", "scipy", "keras", "tensorflow", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(model: ClassifierModel, directory: str | Path) -> Path:
    """Write the model directory: model.json (config, categories, versions, metrics),
    model.joblib (extractors, scalers, heads, label encoder) and finetuned.keras."""
    import joblib

    from .files import atomic_write_text, atomic_writer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    networks = {key: block.network for key, block in model.blocks.items() if block.network is not None}
    for network in networks.values():  # at most one: TrainConfig.check allows one fine-tuned backbone
        network.save(directory / NETWORK_FILE)
    objects = {
        "blocks": {key: Block(b.kind, b.spec, b.extractor, b.scaler, b.head, None)
                   for key, b in model.blocks.items()},
        "fusion_heads": model.fusion_heads,
        "label_encoder": model.label_encoder,
    }
    with atomic_writer(directory / OBJECTS_FILE, "wb") as handle:
        joblib.dump(objects, handle)
    meta = {
        "format": MODEL_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": model.versions or library_versions(),
        "config": model.config.to_dict(),
        "categories": model.categories,
        "modalities": model.config.modalities,
        "extractors": {key: {"kind": b.kind, "spec": b.spec, "plugin": b.extractor.name,
                             "params": {k: repr(v) for k, v in b.extractor.get_params().items()},
                             "fine_tuned": b.network is not None}
                       for key, b in model.blocks.items()},
        "files": {"objects": OBJECTS_FILE, **({"network": NETWORK_FILE} if networks else {})},
        # checked before unpickling: a damaged or swapped objects file is refused, not run
        "sha256": {OBJECTS_FILE: _sha256(directory / OBJECTS_FILE)},
        "default_group": model.group,
        "metrics": {k: v for k, v in model.metrics.items()
                    if k in ("mean", "results", "folds", "main", "best_group", "fusion_warning")},
    }
    atomic_write_text(directory / MODEL_FILE, json.dumps(meta, indent=2))
    return directory


def _check_meta(meta: dict[str, Any], meta_path: Path) -> None:
    """model.json has every key, of the right type, before anything relies on it."""
    redo = "the file was edited or is damaged: restore it or train the model again"
    for key, kind in (("versions", dict), ("config", dict), ("categories", list), ("files", dict)):
        if key not in meta:
            raise ModelError(f"{meta_path} has no '{key}': {redo}")
        if not isinstance(meta[key], kind):
            raise ModelError(f"{meta_path}: '{key}' is a {type(meta[key]).__name__}, expected a "
                             f"{kind.__name__}: {redo}")
    for package, version in meta["versions"].items():
        if not isinstance(version, str):
            raise ModelError(f"{meta_path}: the {package} version is {json.dumps(version)}, expected a string "
                             f"such as \"1.2.0\": {redo}")
    if not all(isinstance(name, str) for name in meta["files"].values()):
        raise ModelError(f"{meta_path}: 'files' must map roles to file names: {redo}")
    categories = meta["categories"]
    if not all(isinstance(c, str) for c in categories) or len(set(categories)) != len(categories):
        raise ModelError(f"{meta_path}: 'categories' must be distinct strings: {redo}")
    checksums = meta.get("sha256", {})
    if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
        raise ModelError(f"{meta_path}: 'sha256' must map file names to checksums: {redo}")
    if not isinstance(meta.get("default_group", ""), (str, type(None))):
        raise ModelError(f"{meta_path}: 'default_group' must be a string: {redo}")


def _check_against_objects(meta: dict[str, Any], meta_path: Path, config: TrainConfig, objects: dict) -> None:
    """model.json describes the pickled model: same categories (in the label encoder's order,
    which is the heads' column order) and same extractors. An edited category list would
    otherwise name every prediction wrongly without an error."""
    redo = "model.json was edited or belongs to another model: restore it or train the model again"
    categories = list(meta["categories"])
    encoder = objects.get("label_encoder")
    classes = [str(c) for c in encoder.classes_] if encoder is not None else None
    if classes is not None and classes != categories:
        extra = [c for c in categories if c not in classes]
        lost = [c for c in classes if c not in categories]
        what = (f"lists {extra[0]!r}, unknown to the model" if extra
                else f"lacks {lost[0]!r}" if lost else "lists them in another order than the model")
        raise ModelError(f"{meta_path}: its categories do not match the model's ({len(categories)} vs "
                         f"{len(classes)}; it {what}): {redo}")
    expected = [key for key, _, _ in config.blocks]
    if sorted(objects["blocks"]) != sorted(expected):
        raise ModelError(f"{meta_path}: its extractors ({', '.join(expected)}) do not match the model's "
                         f"({', '.join(objects['blocks'])}): {redo}")
    group = meta.get("default_group")
    if group is not None and group not in config.groups:
        raise ModelError(f"{meta_path}: default_group '{group}' is not one of the model's groups "
                         f"({', '.join(config.groups)}): {redo}")


def load_model(directory: str | Path) -> ClassifierModel:
    """Load a model directory written by :func:`save_model`, checking it first.

    ``model.joblib`` is a joblib (pickle) file, and **loading a pickle runs code**: load only
    model directories you trust (trained by you or by someone you trust). Its sha256 checksum,
    recorded in model.json at save time, is checked before unpickling: that catches a damaged
    or swapped file, not one replaced together with its model.json on purpose.

    A missing or damaged file, a model.json that does not match the model (categories,
    extractors, a missing key, a version that is not a string), or a model written by another
    placedemarche or scikit-learn major.minor version raises :class:`ModelError` with one
    line saying what to do. A model saved before checksums were recorded loads with a
    :class:`ModelWarning`.
    """
    directory = Path(directory)
    meta_path = directory / MODEL_FILE
    if not directory.is_dir():
        raise ModelError(f"model directory not found: {directory}")
    if not meta_path.is_file():
        raise ModelError(f"{directory} is not a placedemarche model: {MODEL_FILE} is missing (train one with pm train)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{meta_path} is damaged ({type(exc).__name__}): train the model again") from None
    if meta.get("format") != MODEL_FORMAT:
        raise ModelError(f"{directory}: model format {meta.get('format')!r}, this placedemarche reads "
                         f"format {MODEL_FORMAT}: train the model again")
    _check_meta(meta, meta_path)
    try:
        config = TrainConfig.from_dict(meta["config"])
        config.check()
    except (TypeError, ValueError, PlaceDeMarcheError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{meta_path}: its config cannot be used ({reason}): the file was edited or is "
                         "damaged, restore it or train the model again") from None
    saved = meta["versions"]
    current = library_versions()
    for package in ("placedemarche", "scikit-learn"):
        if package in saved and package in current and _major_minor(saved[package]) != _major_minor(current[package]):
            raise ModelError(
                f"{directory} was saved with {package} {saved[package]}, this is {current[package]}: "
                f"retrain it with this version (or install {package}=={saved[package]})")
    if "network" in meta["files"] and "keras" in saved and "keras" in current \
            and saved["keras"].split(".")[0] != current["keras"].split(".")[0]:
        raise ModelError(f"{directory} was saved with keras {saved['keras']}, this is {current['keras']}: "
                         "retrain it with this version")
    objects_path = directory / OBJECTS_FILE
    if not objects_path.is_file():
        raise ModelError(f"{directory}: {OBJECTS_FILE} is missing: the model directory is incomplete, train again")
    expected = meta.get("sha256", {}).get(OBJECTS_FILE)
    if expected is None:
        warnings.warn(f"{meta_path} records no checksum of {OBJECTS_FILE} (saved by an older placedemarche): "
                      "it is loaded unchecked; train the model again to add one", ModelWarning, stacklevel=2)
    elif _sha256(objects_path) != expected:
        raise ModelError(f"{objects_path} does not match the checksum in {MODEL_FILE}: the file is damaged "
                         "or was replaced; train again or restore it")
    import joblib

    try:
        objects = joblib.load(objects_path)
        blocks: dict[str, Block] = objects["blocks"]
        if not isinstance(blocks, dict):
            raise TypeError("blocks is not a dict")
    except Exception as exc:  # unpickling raises anything on a damaged file
        raise ModelError(f"{objects_path} cannot be read ({type(exc).__name__}): the file is damaged, "
                         "train the model again") from None
    _check_against_objects(meta, meta_path, config, objects)
    if "network" in meta["files"]:
        network_path = directory / meta["files"]["network"]
        if not network_path.is_file():
            raise ModelError(f"{directory}: {network_path.name} is missing: train the model again")
        key = next((k for k, e in meta.get("extractors", {}).items() if e.get("fine_tuned")), "image")
        try:
            blocks[key].network = FineTunedImageModel.load(blocks[key].extractor, network_path)
        except Exception as exc:
            raise ModelError(f"{network_path} cannot be read ({type(exc).__name__}): the file is damaged, "
                             "train the model again") from None
    fusion_heads = objects.get("fusion_heads")
    if fusion_heads is None:  # written before several extractors per modality: one text+image head
        fusion_heads = {"text+image": objects["fusion_head"]} if objects.get("fusion_head") is not None else {}
    return ClassifierModel(config, list(meta["categories"]), blocks, fusion_heads,
                           metrics=meta.get("metrics", {}), versions=saved,
                           default_group=meta.get("default_group"))


# -- prediction on a new catalogue ---------------------------------------------------------
# A few image files not found are left to each row's note; more than this many, or more
# than this share of the products, usually means the images were looked for in the wrong
# directory, which the CLI says once.
MISSING_IMAGES_COUNT = 3
MISSING_IMAGES_SHARE = 0.05


@dataclass
class PredictionResult:
    """What :func:`predict_catalog` returns: the rows written to the CSV and what to tell."""

    rows: list[dict[str, Any]]
    columns: list[str]
    counts: dict[str, int]  # modality used -> products
    accuracy: float | None = None  # when the catalogue carries true categories
    group: str = ""  # the group asked for (products lacking its modalities use what they have)
    missing_images: int = 0  # products whose image file, needed by the model, was not found
    missing_image_dir: str | None = None  # the directory where most of those were looked for

    @property
    def many_images_missing(self) -> bool:
        """More image files not found than a few lost photos explain."""
        return (self.missing_images > MISSING_IMAGES_COUNT
                or self.missing_images > MISSING_IMAGES_SHARE * len(self.rows))


def predict_catalog(model: ClassifierModel, catalog: Catalog, *, top_k: int = 1,
                    cache: FeatureCache | None = None, out: str | Path | None = None,
                    group: str | None = None) -> PredictionResult:
    """Predict every product of ``catalog``; write a CSV to ``out`` when given.

    Each row has the product id and name, the predicted category and its probability (and
    the next ``top_k - 1``), the modality the prediction used, and a note saying why a text
    or image was not used (``image file not found: /x/y.jpg; predicted from text``). A
    product with neither a usable text nor a usable image is kept with an empty category.
    ``group`` picks the group that predicts (default: the model's, the best on its folds).
    The result counts the image files not found, so a caller can say when many are missing.
    """
    if top_k < 1:
        raise PlaceDeMarcheError(f"--top-k must be 1 or more, got {top_k}")
    if len(catalog) == 0:
        raise PlaceDeMarcheError(f"{catalog.source or 'catalogue'} is empty: nothing to predict")
    top_k = min(top_k, len(model.categories))
    group = model.resolve_group(group)
    proba, used = model.predict_details(catalog, cache, group)
    columns = ["id", "name", "category", "probability", "modality"]
    for k in range(2, top_k + 1):
        columns += [f"category_{k}", f"probability_{k}"]
    if catalog.labels is not None:
        columns.append("true_category")
    columns.append("note")
    rows = []
    problems = model.problems(catalog)
    not_found: list[Path] = []
    for i in range(len(catalog)):
        row: dict[str, Any] = {"id": catalog.ids[i], "name": catalog.names[i], "modality": used[i]}
        notes = [reasons[i] for reasons in problems.values() if reasons[i] is not None]
        if notes:
            notes.append("nothing to predict from" if used[i] == "none" else f"predicted from {used[i]}")
        image = problems.get("image", [None] * len(catalog))[i]
        # an image is needed when the group uses images, or when the product has no text
        needed = "image" in group.split("+") or problems.get("text", [None] * len(catalog))[i] is not None
        if image is not None and needed and image.startswith("image file not found"):
            not_found.append(catalog.image_paths[i])
        if np.isnan(proba[i]).all():
            row.update(category="", probability="")
            for k in range(2, top_k + 1):
                row.update({f"category_{k}": "", f"probability_{k}": ""})
        else:
            order = np.argsort(-proba[i])
            row.update(category=model.categories[order[0]], probability=round(float(proba[i, order[0]]), 4))
            for k in range(2, top_k + 1):
                row.update({f"category_{k}": model.categories[order[k - 1]],
                            f"probability_{k}": round(float(proba[i, order[k - 1]]), 4)})
        if catalog.labels is not None:
            row["true_category"] = catalog.labels[i]
        row["note"] = "; ".join(notes)
        rows.append(row)
    counts: dict[str, int] = {}
    for u in used:
        counts[u] = counts.get(u, 0) + 1
    accuracy = None
    if catalog.labels is not None:
        scored = [r for r in rows if r["category"] and r["true_category"]]
        if scored:
            accuracy = sum(r["category"] == r["true_category"] for r in scored) / len(scored)
    where = Counter(str(p.parent) for p in not_found).most_common(1)
    result = PredictionResult(rows, columns, counts, accuracy, group=group, missing_images=len(not_found),
                              missing_image_dir=where[0][0] if where else None)
    if out is not None:
        from .files import atomic_write_text

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(Path(out), buffer.getvalue())
    return result
