"""The decision threshold: which predictions are safe to accept without a person, measured on
out-of-fold probabilities before deployment.

A prediction is *accepted* (``auto``) when its top probability reaches the threshold, and sent
for *review* otherwise. The risk–coverage curve gives, for every possible threshold, the share
of products accepted (coverage) and the precision of the accepted predictions; the threshold
kept for a target precision is the lowest one whose accepted predictions reach it, i.e. the one
that accepts the most products at that precision.

The curve comes from out-of-fold predictions only (each product scored by a model that did not
see it), so the coverage it promises is what a model trained the same way gives on new
products from the same catalogue, not a figure measured on the training rows.

Usage::

    curve = risk_coverage(y, oof_proba)                 # y: category index per product
    point = threshold_for(curve, target_precision=0.98)
    print(f"at 0.98 precision, {point['coverage']:.0%} of products are categorised automatically")
"""

from __future__ import annotations

from typing import Any

import numpy as np

from placedemarche.core.errors import PlaceDeMarcheError

#: Default precision the accepted predictions must reach (``--target-precision``).
TARGET_PRECISION = 0.98
#: Most points of the curve kept in model.json and drawn in report.html.
CURVE_POINTS = 400


def check_target(target_precision: float) -> None:
    if not 0.0 < target_precision <= 1.0:
        raise PlaceDeMarcheError(f"--target-precision must be in (0, 1], got {target_precision}")


def risk_coverage(y: np.ndarray, proba: np.ndarray, points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """The risk–coverage curve of probabilities ``proba`` (rows: products) against the true
    category indices ``y``: for each candidate threshold (a top probability seen, highest
    first), the coverage and the precision of the products at or above it. Rows without a
    prediction (all NaN) count as never accepted. At most ``points`` points are kept, always
    including the highest coverage reached at each precision step."""
    proba = np.asarray(proba, dtype=float)
    y = np.asarray(y)
    usable = ~np.isnan(proba).all(axis=1)
    n = len(y)
    if n == 0 or not usable.any():
        return {"threshold": [], "coverage": [], "precision": []}
    confidence = np.nanmax(proba[usable], axis=1)
    correct = (np.nanargmax(proba[usable], axis=1) == y[usable]).astype(float)
    order = np.argsort(-confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    # one point per distinct confidence: accepting a threshold accepts every tie with it
    last_of_tie = np.r_[confidence[1:] != confidence[:-1], True]
    accepted = np.arange(1, len(confidence) + 1)[last_of_tie]
    precision = (np.cumsum(correct)[last_of_tie]) / accepted
    threshold = confidence[last_of_tie]
    coverage = accepted / n
    if len(threshold) > points:
        keep = np.unique(np.r_[np.linspace(0, len(threshold) - 1, points).round().astype(int),
                               _frontier(precision)])
        threshold, coverage, precision = threshold[keep], coverage[keep], precision[keep]
    return {"threshold": [round(float(v), 6) for v in threshold],
            "coverage": [round(float(v), 6) for v in coverage],
            "precision": [round(float(v), 6) for v in precision]}


def _frontier(precision: np.ndarray) -> np.ndarray:
    """Indices of the points no larger coverage matches in precision (where the best
    threshold for some target lies), so thinning the curve never moves a chosen threshold."""
    best_after = np.maximum.accumulate(precision[::-1])[::-1]
    return np.flatnonzero(precision >= best_after)


def threshold_for(curve: dict[str, list[float]], target_precision: float = TARGET_PRECISION) -> dict[str, Any]:
    """The point of ``curve`` accepting the most products whose precision reaches
    ``target_precision``: ``{"threshold", "coverage", "precision", "target_precision"}``.
    When no threshold reaches it, the threshold is above every probability (``1.0`` plus a
    margin, so nothing is accepted), coverage 0 and precision None: everything goes to review."""
    check_target(target_precision)
    precision = np.asarray(curve.get("precision", []), dtype=float)
    reaching = np.flatnonzero(precision >= target_precision - 1e-12)
    if not len(reaching):
        return {"target_precision": target_precision, "threshold": 1.000001, "coverage": 0.0, "precision": None}
    i = int(reaching[-1])  # coverage grows along the curve: the last point reaching it accepts most
    return {"target_precision": target_precision, "threshold": float(curve["threshold"][i]),
            "coverage": float(curve["coverage"][i]), "precision": float(curve["precision"][i])}


def decision_summary(y: np.ndarray, oof: dict[str, np.ndarray], default_group: str,
                     target_precision: float = TARGET_PRECISION) -> dict[str, Any]:
    """What model.json records: per prediction group its curve and the threshold reaching
    ``target_precision``; the default group's point also at the top level (``group``,
    ``threshold``, ``coverage``, ``precision``, ``curve``), the one a service uses for a
    product that has every modality."""
    by_group = {}
    for group, proba in oof.items():
        curve = risk_coverage(y, proba)
        by_group[group] = {**threshold_for(curve, target_precision), "curve": curve}
    main = by_group[default_group]
    return {"group": default_group, **main, "by_group": by_group}


def describe(decision: dict[str, Any]) -> str:
    """One sentence people read: "at 0.98 precision, 83 % of products are categorised automatically"."""
    target = decision["target_precision"]
    if decision.get("precision") is None:
        return (f"no threshold reaches {target:g} precision on the out-of-fold predictions: "
                "every product goes to review")
    return (f"at {target:g} precision, {decision['coverage']:.0%} of products are categorised "
            f"automatically (probability ≥ {decision['threshold']:.3f})")
