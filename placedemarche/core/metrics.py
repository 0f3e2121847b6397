"""Clustering scores against true categories: ARI, NMI, homogeneity, completeness,
silhouette, and accuracy after matching clusters to categories (Hungarian algorithm)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

METRICS = ("ari", "nmi", "homogeneity", "completeness", "silhouette", "matched_accuracy")


def contingency(true: Sequence[int], pred: Sequence[int], n_true: int, n_pred: int) -> np.ndarray:
    table = np.zeros((n_true, n_pred), dtype=np.int64)
    np.add.at(table, (np.asarray(true), np.asarray(pred)), 1)
    return table


def match_clusters(true: Sequence[int], pred: Sequence[int], n_true: int, n_pred: int) -> dict[int, int]:
    """Cluster -> category mapping maximising agreement (one category per cluster at most)."""
    from scipy.optimize import linear_sum_assignment

    table = contingency(true, pred, n_true, n_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {int(c): int(r) for r, c in zip(rows, cols)}


def matched_confusion(true: Sequence[int], pred: Sequence[int], n_true: int, n_pred: int) -> np.ndarray:
    """Confusion matrix (true category x matched cluster), clusters ordered by their category.

    Clusters left unmatched (when there are more clusters than categories) come last.
    """
    mapping = match_clusters(true, pred, n_true, n_pred)
    table = contingency(true, pred, n_true, n_pred)
    order = sorted(range(n_pred), key=lambda c: (mapping.get(c, n_true + c)))
    return table[:, order]


def score_clustering(true: Sequence[int], pred: Sequence[int], X=None) -> dict[str, float]:
    from sklearn import metrics

    true = np.asarray(true)
    pred = np.asarray(pred)
    n_true = int(true.max()) + 1
    n_pred = int(pred.max()) + 1
    mapping = match_clusters(true, pred, n_true, n_pred)
    matched = np.array([mapping.get(int(c), -1) for c in pred])
    scores = {
        "ari": metrics.adjusted_rand_score(true, pred),
        "nmi": metrics.normalized_mutual_info_score(true, pred),
        "homogeneity": metrics.homogeneity_score(true, pred),
        "completeness": metrics.completeness_score(true, pred),
        "matched_accuracy": float(np.mean(matched == true)),
        "silhouette": float("nan"),
    }
    if X is not None and 1 < len(set(pred.tolist())) < len(pred):
        scores["silhouette"] = metrics.silhouette_score(X, pred, random_state=0)
    return {k: float(v) for k, v in scores.items()}
