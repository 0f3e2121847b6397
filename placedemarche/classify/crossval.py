"""Training: stratified k-fold cross-validation, then the fit on every product.

Extractors that learn from data are fitted inside each training fold; the features of the
others (and the bottleneck of a fine-tuned network) are computed once on the whole catalogue,
which leaks nothing since they learn nothing from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from placedemarche.features.cache import FeatureCache
from placedemarche.data.catalog import Catalog
from placedemarche.data.categories import leave_out_small
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.features.extraction import extract_features
from placedemarche.classify.finetune import BackboneSplit, FineTunedImageModel, train_top
from placedemarche.core.plugins import create_plugin
from placedemarche.core.progress import task
from placedemarche.classify.blocks import Block, BlockScaler, _combine, _hstack, _items, _rows, fit_head, head_proba, make_head
from placedemarche.classify.config import TrainConfig
from placedemarche.classify.hierarchy import CategoryTree, add_hierarchy_summary, hierarchical_head
from placedemarche.classify.model import ClassifierModel
from placedemarche.classify.threshold import decision_summary
from placedemarche.classify.modeldir import library_versions, save_model


@dataclass
class _Precomputed:
    """Whole-catalogue inputs that learn nothing from labels: frozen features, bottlenecks."""

    features: dict[str, Any] = field(default_factory=dict)  # block key -> matrix (frozen extractors)
    bottleneck: np.ndarray | None = None  # (views, n, ...) for a fine-tuned image block
    split: BackboneSplit | None = None
    feature_info: dict[str, Any] = field(default_factory=dict)


def _fit_blocks(config: TrainConfig, catalog: Catalog, y: np.ndarray, train: np.ndarray,
                pre: _Precomputed, n_classes: int, tree: CategoryTree | None = None
                ) -> tuple[dict[str, Block], dict[str, Any], list]:
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
                                network=FineTunedImageModel.from_parts(pre.split, top), top=top)
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
        head = fit_head(hierarchical_head(make_head(config), config.hierarchy, tree), Z, y[train])
        blocks[key] = Block(kind, spec, extractor, scaler, head)
        scaled[key] = Z
    return blocks, scaled, history


def _fusion_heads(config: TrainConfig, blocks: dict[str, Block], scaled: dict[str, Any],
                  y: np.ndarray, tree: CategoryTree | None = None) -> dict[str, Any]:
    """With ``concat`` fusion, one head per group of several frozen-feature blocks."""
    heads = {}
    if config.fusion != "concat":
        return heads
    for group, keys in config.groups.items():
        if len(keys) > 1 and all(blocks[key].network is None for key in keys):
            heads[group] = fit_head(hierarchical_head(make_head(config), config.hierarchy, tree),
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
            probas[key] = np.asarray(block.top.predict(pre.bottleneck[0, test].astype(np.float32), verbose=0))
            continue
        if block.extractor.learns_from_data:
            X = block.extractor.transform(_items(block.kind, catalog.subset(test), config.text_field))
        else:
            X = _rows(pre.features[key], test)
        features[key] = block.scaler.transform(X)
        probas[key] = head_proba(block.head, features[key])
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


def _check_catalog(catalog: Catalog, config: TrainConfig) -> tuple[Catalog, list[str], np.ndarray]:
    where = catalog.source or "catalogue"
    if len(catalog) == 0:
        raise PlaceDeMarcheError(f"{where} is empty: no product to train on")
    if catalog.labels is None:
        raise PlaceDeMarcheError(f"{where} has no category column: training needs labelled products "
                                 "(name it with --label-column)")
    empty = [catalog.ids[i] for i, label in enumerate(catalog.labels) if not label.strip()]
    if empty:
        raise PlaceDeMarcheError(f"{where}: {len(empty)} product(s) have no category (first: {empty[0]})")
    if config.folds:  # a category smaller than the folds need is left out, with a note, not refused
        catalog = leave_out_small(catalog, max(2, config.folds, catalog.category_info.get("min_size", 0)))
    categories = catalog.categories
    if len(categories) < 2:
        raise PlaceDeMarcheError(f"{where} has {len(categories)} category; need at least 2 to classify")
    index = {c: i for i, c in enumerate(categories)}
    y = np.array([index[label] for label in catalog.labels])
    return catalog, categories, y


# -- training and cross-validation ------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` returns: the fitted model and the cross-validation figures."""

    model: ClassifierModel
    summary: dict[str, Any]
    folds: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)
    #: The category index of each product, and each group's out-of-fold probabilities
    #: (empty without folds): what the report, the decision threshold and the audit read.
    y: np.ndarray | None = None
    oof: dict[str, np.ndarray] = field(default_factory=dict)
    #: Fine-tuning learning curves: one list of epochs per fold, and the final fit's.
    histories: list[list[dict]] = field(default_factory=list)
    final_history: list[dict] = field(default_factory=list)
    #: the products trained on (the catalogue less the categories left out): the rows of ``y``
    catalog: Catalog | None = field(default=None, repr=False)

    def predict(self, data, cache: FeatureCache | None = None):
        return self.model.predict(data, cache)

    def predict_proba(self, data, cache: FeatureCache | None = None):
        return self.model.predict_proba(data, cache)


def train(catalog: Catalog, config: TrainConfig, *, cache: FeatureCache | None = None,
          out: str | Path | None = None, final_fit: bool = True) -> TrainResult:
    """Cross-validate (``config.folds`` stratified folds), then fit on all products.

    With ``final_fit=False`` only the folds run (the out-of-fold probabilities are what
    ``pm audit`` reads): the returned model has no blocks and cannot predict or be saved.

    The catalogue must be labelled and validated for the modalities used. When ``out`` is
    given, the model directory is written there; the report files beside it (metrics.json,
    folds.csv, classification_report.txt, confusion matrix, learning curves, report.html) are
    the report stage's: :func:`placedemarche.report.training.write_training_report`.
    """
    config.check()
    catalog, categories, y = _check_catalog(catalog, config)
    n_classes = len(categories)
    config = replace(config, category_level=int(catalog.category_info.get("level", 1)))
    tree = CategoryTree(categories, config.category_level) if config.category_level > 1 else None
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
                blocks, scaled, history = _fit_blocks(config, catalog, y, train_idx, pre, n_classes, tree)
                fusion = _fusion_heads(config, blocks, scaled, y[train_idx], tree)
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
    blocks, fusion, history = {}, {}, []
    if final_fit:
        blocks, scaled, history = _fit_blocks(config, catalog, y, np.arange(len(y)), pre, n_classes, tree)
        fusion = _fusion_heads(config, blocks, scaled, y, tree)
    for block in blocks.values():
        block.top = None  # only fold predictions use it
    final_seconds = time.perf_counter() - started
    summary = _summary(config, catalog, categories, y, folds, oof, pre, final_seconds, tree)
    model = ClassifierModel(config, categories, blocks, fusion, metrics=summary, versions=library_versions(),
                            default_group=summary.get("best_group"))
    result = TrainResult(model, summary, folds, y=y, oof=oof, histories=histories, final_history=history,
                         catalog=catalog)
    if out is not None and final_fit:
        save_model(model, out)
    return result


def _scores(y_true: np.ndarray, P: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    pred = np.argmax(P, axis=1)
    return {"accuracy": round(float(accuracy_score(y_true, pred)), 4),
            "macro_f1": round(float(f1_score(y_true, pred, average="macro")), 4)}


def _summary(config, catalog, categories, y, folds, oof, pre, final_seconds, tree=None) -> dict[str, Any]:
    from sklearn.metrics import classification_report, confusion_matrix

    main = "text+image" if len(config.modalities) == 2 else config.modalities[0]
    summary: dict[str, Any] = {
        "config": config.to_dict(),
        "catalog": {"source": catalog.source, "products": len(catalog), "categories": categories,
                    "dropped": len(catalog.dropped), "category": catalog.category_info},
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
    summary["decision"] = decision_summary(y, oof, summary["best_group"], config.target_precision)
    if tree is not None:  # per-level scores and thresholds (classify.hierarchy)
        add_hierarchy_summary(summary["results"], summary.get("decision"), tree, y, oof, config.target_precision)
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

