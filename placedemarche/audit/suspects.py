"""The suspects of a catalogue: out-of-fold probabilities from the classifier's k-fold, then
confident learning (cleanlab) on them, ranked by cleanlab's label-quality score.

A product is a *suspect* when cleanlab's ``find_label_issues`` finds its declared category
probably wrong given the out-of-fold probabilities of every category; suspects are ranked by
``get_label_quality_scores`` (lowest quality first). The per-category estimated error rates
are cleanlab's health summary (``health_summary``: the share of the products declared in a
category whose label is estimated wrong).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from placedemarche.classify import TrainConfig, train
from placedemarche.audit.options import AuditOptions
from placedemarche.core.errors import MissingDependencyError, PlaceDeMarcheError
from placedemarche.core.progress import task
from placedemarche.data.catalog import Catalog
from placedemarche.features.cache import FeatureCache

@dataclass
class Suspect:
    """A product whose declared category is probably wrong."""

    rank: int
    index: int  # row of the catalogue
    id: str
    name: str
    declared: str
    suggested: str
    quality: float  # cleanlab's label-quality score of the declared category (0 worst, 1 best)
    p_declared: float
    p_suggested: float

    def to_row(self) -> dict[str, Any]:
        return {"rank": self.rank, "id": self.id, "name": self.name, "declared_category": self.declared,
                "suggested_category": self.suggested, "quality": round(self.quality, 4),
                "p_declared": round(self.p_declared, 4), "p_suggested": round(self.p_suggested, 4)}


@dataclass
class AuditResult:
    """What :func:`audit_catalog` returns: the suspects, the health of each category, and the
    probabilities they come from."""

    catalog: Catalog
    categories: list[str]
    y: np.ndarray  # declared category index of each product
    probabilities: np.ndarray  # (n, categories) out-of-fold, of ``group``
    quality: np.ndarray  # label-quality score of every product
    suspects: list[Suspect]
    health: list[dict[str, Any]]  # per category, worst first
    overall_health: float
    group: str
    config: TrainConfig
    options: AuditOptions
    training: dict[str, Any]  # the k-fold's summary (scores per group, features)
    seconds: float = 0.0
    files: dict[str, str] = field(default_factory=dict)

    @property
    def estimated_error_rate(self) -> float:
        """Share of the catalogue whose category cleanlab estimates wrong (1 - health score)."""
        return 1.0 - self.overall_health

    def summary(self) -> dict[str, Any]:
        """The JSON-able figures of the audit (results.json)."""
        accuracy = (self.training.get("results") or {}).get(self.group, {})
        return {
            "catalog": {"source": self.catalog.source, "products": len(self.catalog),
                        "dropped": len(self.catalog.dropped), "categories": self.categories},
            "config": self.config.to_dict(),
            "audit": self.options.to_dict(),
            "group": self.group,
            "out_of_fold_accuracy": accuracy.get("accuracy_mean"),
            "out_of_fold_macro_f1": accuracy.get("macro_f1_mean"),
            "suspects": len(self.suspects),
            "suspect_share": round(len(self.suspects) / max(len(self.catalog), 1), 4),
            "overall_label_health_score": round(self.overall_health, 4),
            "estimated_error_rate": round(self.estimated_error_rate, 4),
            "categories": self.health,
            "features": self.training.get("features", {}),
            "seconds": round(self.seconds, 1),
            "files": self.files,
        }


def _cleanlab():
    try:
        import cleanlab.count
        import cleanlab.dataset
        import cleanlab.filter
        import cleanlab.rank
    except ImportError:
        raise MissingDependencyError("pm audit needs cleanlab: pip install 'placedemarche[audit]'") from None
    return cleanlab


def out_of_fold_probabilities(catalog: Catalog, config: TrainConfig, options: AuditOptions, *,
                              cache: FeatureCache | None = None) -> tuple[np.ndarray, np.ndarray, str, dict]:
    """``(y, probabilities, group, summary)``: the k-fold's out-of-fold probabilities of
    ``options.group`` (default: the best group), averaged over ``options.repeats`` seeds, with
    the first run's training summary. No model is fitted on every product."""
    if not config.folds:
        raise PlaceDeMarcheError("pm audit needs out-of-fold probabilities: --folds must be at least 2")
    total, summary, y, group = None, None, None, options.group
    for repeat in range(options.repeats):
        result = train(catalog, replace(config, seed=config.seed + repeat), cache=cache, final_fit=False)
        if summary is None:
            summary, y = result.summary, result.y
            group = group or summary.get("best_group") or summary["main"]
            if group not in result.oof:
                raise PlaceDeMarcheError(f"no prediction '{group}' to audit: use one of {', '.join(result.oof)}")
        P = result.oof[group]
        total = P if total is None else total + P
    return y, total / options.repeats, group, summary


def label_issues(cleanlab, y: np.ndarray, P: np.ndarray, quality: np.ndarray, filter_by: str) -> np.ndarray:
    """Boolean mask of the label issues: with ``lowest_quality``, the products of lowest label
    quality, as many as cleanlab's calibrated count of issues; otherwise cleanlab's
    ``find_label_issues(filter_by=)``."""
    if filter_by != "lowest_quality":
        return cleanlab.filter.find_label_issues(y, P, filter_by=filter_by)
    count = int(cleanlab.count.num_label_issues(y, P, estimation_method="off_diagonal_calibrated"))
    issues = np.zeros(len(y), dtype=bool)
    issues[np.argsort(quality, kind="stable")[:count]] = True
    return issues


def find_suspects(y: np.ndarray, probabilities: np.ndarray, categories: list[str], catalog: Catalog,
                  options: AuditOptions) -> tuple[list[Suspect], np.ndarray]:
    """The suspects (cleanlab's label issues, lowest label quality first) and the label-quality
    score of every product."""
    cleanlab = _cleanlab()
    P = np.clip(probabilities, 1e-12, None)
    P = P / P.sum(axis=1, keepdims=True)
    quality = cleanlab.rank.get_label_quality_scores(y, P, method=options.rank_by)
    issues = label_issues(cleanlab, y, P, quality, options.filter_by)
    others = P.copy()
    others[np.arange(len(y)), y] = -1.0  # the suggestion is never the declared category
    suggested = np.argmax(others, axis=1)
    order = sorted(np.flatnonzero(issues), key=lambda i: (quality[i], catalog.ids[i]))
    suspects = [Suspect(rank=rank, index=int(i), id=catalog.ids[i], name=catalog.names[i],
                        declared=categories[y[i]], suggested=categories[suggested[i]], quality=float(quality[i]),
                        p_declared=float(P[i, y[i]]), p_suggested=float(P[i, suggested[i]]))
                for rank, i in enumerate(order, start=1)]
    return suspects, quality


def category_health(y: np.ndarray, probabilities: np.ndarray, categories: list[str]) -> tuple[list[dict], float]:
    """cleanlab's health summary: per category (worst first) the products declared in it, the
    estimated label issues among them and their share (the estimated error rate), the issues
    estimated to belong to it, and its label-quality score; and the overall health score."""
    cleanlab = _cleanlab()
    counts = np.bincount(y, minlength=len(categories))
    present = np.flatnonzero(counts)
    # cleanlab wants every class present: score the categories that have products
    remap = np.full(len(categories), -1)
    remap[present] = np.arange(len(present))
    P = np.clip(probabilities[:, present], 1e-12, None)
    summary = cleanlab.dataset.health_summary(remap[y], P / P.sum(axis=1, keepdims=True),
                                              class_names=[categories[i] for i in present], verbose=False)
    table = summary["classes_by_label_quality"]
    rows = []
    for record in table.to_dict("records"):
        name = record["Class Name"]
        rows.append({"category": name, "products": int(counts[categories.index(name)]),
                     "label_issues": int(record["Label Issues"]),
                     "estimated_error_rate": round(float(record["Label Noise"]), 4),
                     "inverse_label_issues": int(record["Inverse Label Issues"]),
                     "label_quality": round(float(record["Label Quality Score"]), 4)})
    rows.sort(key=lambda r: (-r["estimated_error_rate"], r["category"]))
    return rows, float(summary["overall_label_health_score"])


def audit_catalog(catalog: Catalog, config: TrainConfig, options: AuditOptions | None = None, *,
                  cache: FeatureCache | None = None) -> AuditResult:
    """Find the products of a labelled, validated catalogue whose declared category is
    probably wrong.

    Usage::

        from placedemarche.audit.options import AuditOptions
        from placedemarche.audit.suspects import audit_catalog
        from placedemarche.classify import TrainConfig
        from placedemarche.data.catalog import load_catalog

        catalog = load_catalog("shared/data/flipkart").validated()
        result = audit_catalog(catalog, TrainConfig(text="tfidf", image="efficientnet-lite0"))
        for suspect in result.suspects[:10]:
            print(suspect.id, suspect.declared, "->", suspect.suggested, round(suspect.quality, 3))
    """
    options = options or AuditOptions()
    options.check()
    config.check()
    _cleanlab()  # a missing cleanlab fails before the k-fold, not after it
    started = time.perf_counter()
    y, P, group, summary = out_of_fold_probabilities(catalog, config, options, cache=cache)
    categories = summary["catalog"]["categories"]
    with task("confident learning", total=2) as bar:
        suspects, quality = find_suspects(y, P, categories, catalog, options)
        bar.advance(1)
        health, overall = category_health(y, P, categories)
        bar.advance(1)
    return AuditResult(catalog=catalog, categories=categories, y=y, probabilities=P, quality=quality,
                       suspects=suspects, health=health, overall_health=overall, group=group, config=config,
                       options=options, training=summary, seconds=time.perf_counter() - started)


def image_path(result: AuditResult, suspect: Suspect) -> Path | None:
    path = result.catalog.image_paths[suspect.index]
    return Path(path) if path is not None and not isinstance(path, str) else None
