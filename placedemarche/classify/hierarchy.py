"""A classifier that knows the category tree: probabilities of every level from the leaves',
hierarchical scores, one decision threshold per level, and the path a product is answered with.

A model trained at level L > 1 (``TrainConfig.category_level``) predicts probabilities over its
categories, the paths down to level L ("Home Furnishing > Bed Linen > Bedsheets"). Two ways to
learn them (``TrainConfig.hierarchy``):

- ``per-level`` (default): one head per level (:class:`LevelHeads`); a leaf's probability is the
  product of the probabilities of the nodes on its path, normalised over the valid paths, so the
  levels never disagree;
- ``flat``: one head over the leaves; the probability of a node of an upper level is the sum of
  its leaves' probabilities (about 3 times faster to train; same accuracy on the Flipkart folds,
  fewer products answered down to the leaf at the target precision: docs/benchmarks.md).

Either way the model answers a distribution over leaves, so a product's path is its most probable
leaf and that leaf's ancestors (a child is always under its parent), and the probability of each
level is the summed probability of the node on the path. The answer stops at the deepest level
whose probability reaches that level's decision threshold ("Home Furnishing > Bed Linen" when the
third level is unsure). The thresholds come from the out-of-fold probabilities summed to each level
through the same risk–coverage functions as the leaf's (:mod:`placedemarche.classify.threshold`).

Hierarchical precision, recall and F1 (Kiritchenko et al. 2005) give credit for the shared part
of a path: with Â the predicted node and its ancestors and A the true ones, hP = Σ|Â∩A| / Σ|Â|,
hR = Σ|Â∩A| / Σ|A| over the products, hF their harmonic mean.

Usage::

    tree = category_tree(model)                  # None for a level-1 model
    paths = answer_paths(model, proba, used)     # [("Home Furnishing > Bed Linen", 2, 0.97), ...]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from placedemarche.classify.blocks import fit_head, head_proba
from placedemarche.classify.threshold import risk_coverage, threshold_for
from placedemarche.data.categories import coarser
from placedemarche.data.category_paths import LABEL_SEPARATOR


class CategoryTree:
    """The levels of a model's categories (paths joined with ``" > "``, at most ``levels`` deep):
    ``nodes[l - 1]`` the sorted names at level l, ``member[l - 1][c]`` the node of category c
    there. A category shallower than a level (a branch that stops early) is its own node below."""

    def __init__(self, categories: Sequence[str], levels: int):
        self.categories = list(categories)
        self.levels = levels
        self.nodes: list[list[str]] = []
        self.member: list[np.ndarray] = []
        for level in range(1, levels + 1):
            names = coarser(self.categories, level)
            nodes = sorted(set(names))
            index = {name: i for i, name in enumerate(nodes)}
            self.nodes.append(nodes)
            self.member.append(np.array([index[name] for name in names], dtype=np.int64))

    def sum_to(self, proba: np.ndarray, level: int) -> np.ndarray:
        """Probabilities ``(n, nodes at level)`` of each node: the sum of its leaves' (NaN rows stay NaN)."""
        onehot = np.zeros((len(self.categories), len(self.nodes[level - 1])))
        onehot[np.arange(len(self.categories)), self.member[level - 1]] = 1.0
        return np.asarray(proba, dtype=float) @ onehot

    def path_probabilities(self, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The path of each row (its most probable leaf): node index per level ``(n, levels)``
        (-1 for a row without prediction) and the summed probability of each node ``(n, levels)``."""
        proba = np.asarray(proba, dtype=float)
        usable = ~np.isnan(proba).all(axis=1)
        leaf = np.full(len(proba), -1)
        leaf[usable] = np.nanargmax(proba[usable], axis=1)
        nodes = np.full((len(proba), self.levels), -1)
        probs = np.full((len(proba), self.levels), np.nan)
        rows = np.flatnonzero(usable)
        for level in range(1, self.levels + 1):
            summed = self.sum_to(proba[rows], level)
            nodes[rows, level - 1] = self.member[level - 1][leaf[rows]]
            probs[rows, level - 1] = summed[np.arange(len(rows)), nodes[rows, level - 1]]
        return nodes, probs

    def level_matrix(self, proba: np.ndarray, level: int) -> np.ndarray:
        """Rows with only the path's node at ``level`` set (to its summed probability), NaN
        elsewhere: what :func:`risk_coverage` reads to score the path's node at that level."""
        nodes, probs = self.path_probabilities(proba)
        out = np.full((len(nodes), len(self.nodes[level - 1])), np.nan)
        rows = np.flatnonzero(nodes[:, level - 1] >= 0)
        out[rows, nodes[rows, level - 1]] = probs[rows, level - 1]
        return out


def category_tree(model) -> CategoryTree | None:
    """The tree of a model trained at a level below the first (None at level 1 and for models
    saved before levels)."""
    level = int(getattr(model.config, "category_level", 1) or 1)
    return CategoryTree(model.categories, level) if level > 1 else None


def ancestors(label: str) -> set[str]:
    """A category and every node above it: ``{"A", "A > B"}`` for ``"A > B"`` (empty for "")."""
    parts = label.split(LABEL_SEPARATOR) if label else []
    return {LABEL_SEPARATOR.join(parts[:k]) for k in range(1, len(parts) + 1)}


def hierarchical_prf(true: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Hierarchical precision, recall and F1 over ancestor sets (micro-averaged over products);
    an empty prediction (nothing decided) adds to the recall's denominator only."""
    shared = guessed = actual = 0
    for t, p in zip(true, predicted):
        A, P = ancestors(t), ancestors(p)
        shared += len(A & P)
        guessed += len(P)
        actual += len(A)
    hp = shared / guessed if guessed else 0.0
    hr = shared / actual if actual else 0.0
    hf = 2 * hp * hr / (hp + hr) if hp + hr else 0.0
    return {"hP": round(hp, 4), "hR": round(hr, 4), "hF": round(hf, 4)}


def level_scores(tree: CategoryTree, y: np.ndarray, proba: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per level: accuracy and macro-F1 of the path's node, hP/hR/hF of the path cut there."""
    from sklearn.metrics import accuracy_score, f1_score

    nodes, _ = tree.path_probabilities(proba)
    scores = {}
    for level in range(1, tree.levels + 1):
        names = np.array(tree.nodes[level - 1] + [""])  # -1 (no prediction) reads as ""
        truth = names[tree.member[level - 1][y]]
        pred = names[nodes[:, level - 1]]
        scores[str(level)] = {"accuracy": round(float(accuracy_score(truth, pred)), 4),
                              "macro_f1": round(float(f1_score(truth, pred, average="macro", zero_division=0)), 4),
                              **hierarchical_prf(truth, pred), "categories": len(set(truth))}
    return scores


def level_decisions(tree: CategoryTree, y: np.ndarray, proba: np.ndarray,
                    target_precision: float) -> dict[str, dict[str, Any]]:
    """Per level, the risk–coverage curve of the path's node (summed out-of-fold probabilities)
    and the threshold reaching ``target_precision`` at that level."""
    out = {}
    for level in range(1, tree.levels + 1):
        curve = risk_coverage(tree.member[level - 1][y], tree.level_matrix(proba, level))
        out[str(level)] = {**threshold_for(curve, target_precision), "curve": curve}
    return out


def stopped_paths(tree: CategoryTree, proba: np.ndarray, thresholds: Sequence[float | None]
                  ) -> list[tuple[str, int, float | None]]:
    """Each row's answer: the path down to the deepest level whose probability reaches its
    level's threshold (stopping at the first level that does not), that level (0: not even the
    first level is sure, path ""), and the probability there (None at level 0)."""
    nodes, probs = tree.path_probabilities(proba)
    answers = []
    for row in range(len(nodes)):
        depth = 0
        for level in range(1, tree.levels + 1):
            limit = thresholds[level - 1] if level - 1 < len(thresholds) else None
            if nodes[row, level - 1] < 0 or limit is None or probs[row, level - 1] < limit:
                break
            depth = level
        if depth == 0:
            answers.append(("", 0, None))
        else:
            name = tree.nodes[depth - 1][nodes[row, depth - 1]]
            answers.append((name, len(name.split(LABEL_SEPARATOR)), round(float(probs[row, depth - 1]), 6)))
    return answers


def stopped_scores(tree: CategoryTree, y: np.ndarray, proba: np.ndarray,
                   thresholds: Sequence[float | None]) -> dict[str, Any]:
    """hP/hR/hF of the stopped paths against the true leaves, and the share of products
    answered down to each level (``"0"``: sent to review at the first level)."""
    answers = stopped_paths(tree, proba, thresholds)
    truth = [tree.categories[i] for i in y]
    depths = [level for _, level, _ in answers]
    return {**hierarchical_prf(truth, [path for path, _, _ in answers]),
            "stopped_at": {str(k): round(depths.count(k) / max(len(depths), 1), 4) for k in range(tree.levels + 1)}}


def add_hierarchy_summary(result: dict[str, Any], decision: dict[str, Any] | None, tree: CategoryTree,
                          y: np.ndarray, oof: dict[str, np.ndarray], target_precision: float) -> None:
    """Add per-level scores to each group's ``result[group]["levels"]`` and, to ``decision``,
    the per-level thresholds of every group (``by_group[g]["levels"]``, the default group's
    also at ``decision["levels"]``) with the scores of the paths they stop."""
    for group, proba in oof.items():
        if group in result:
            result[group]["levels"] = level_scores(tree, y, proba)
    if not decision:
        return
    for group, point in (decision.get("by_group") or {}).items():
        levels = level_decisions(tree, y, oof[group], target_precision)
        point["levels"] = levels
        point["stopped"] = stopped_scores(tree, y, oof[group], [levels[str(k)]["threshold"]
                                                                for k in range(1, tree.levels + 1)])
    main = (decision.get("by_group") or {}).get(decision.get("group"))
    if main:
        decision["levels"], decision["stopped"] = main["levels"], main["stopped"]


def level_thresholds(decision: dict[str, Any] | None, target_precision: float | None = None
                     ) -> dict[str, list[float | None]]:
    """Threshold per level of each group, as stored by :func:`add_hierarchy_summary` (or, with
    ``target_precision``, the points of the stored curves reaching it). Empty: none stored."""
    out: dict[str, list[float | None]] = {}
    if not isinstance(decision, dict):
        return out
    groups = decision.get("by_group") or {decision.get("group"): decision}
    for group, point in groups.items():
        levels = (point or {}).get("levels") or {}
        if not levels:
            continue
        values = []
        for key in sorted(levels, key=int):
            chosen = levels[key]
            if target_precision is not None:
                chosen = threshold_for(chosen.get("curve") or {}, target_precision)
            values.append(chosen.get("threshold"))
        out[group] = values
    return out


def answer_paths(model, proba: np.ndarray, used: Sequence[str],
                 thresholds: dict[str, list[float | None]] | None = None) -> list[tuple[str, int, float | None]] | None:
    """``(path, level, probability)`` of each row as :func:`stopped_paths` gives it, each row
    with the thresholds of the group that predicted it; None for a level-1 model. Without
    thresholds (a model trained without folds) nothing passes: every path is ""."""
    tree = category_tree(model)
    if tree is None:
        return None
    if thresholds is None:
        thresholds = level_thresholds(model.metrics.get("decision"))
    answers: list[tuple[str, int, float | None]] = [("", 0, None)] * len(used)
    for group in set(used):
        rows = [i for i, g in enumerate(used) if g == group]
        limits = thresholds.get(group) or [None] * tree.levels
        for i, answer in zip(rows, stopped_paths(tree, np.asarray(proba)[rows], limits)):
            answers[i] = answer
    return answers


class LevelHeads(ClassifierMixin, BaseEstimator):
    """One classifier head per level of the tree, answering leaf probabilities: a leaf's is the
    product of its path's node probabilities, normalised over the leaves (the valid paths).

    ``head`` is the (unfitted) head plugin copied for each level; ``members[l][c]`` is the node
    at level l + 1 of category c (:attr:`CategoryTree.member`). ``fit`` takes category indices.
    """

    accepts_sparse = True  # each level's head gets the input its own way (blocks._head_input)

    def __init__(self, head=None, members=None):
        self.head = head
        self.members = members

    def fit(self, X, y):
        from sklearn.base import clone

        y = np.asarray(y)
        self.classes_ = np.unique(y)
        self.heads_ = []
        for member in self.members:
            nodes = np.asarray(member)[y]
            # a level with one node among these products says nothing: probability 1
            self.heads_.append(fit_head(clone(self.head), X, nodes) if len(np.unique(nodes)) > 1 else None)
        return self

    def predict_proba(self, X) -> np.ndarray:
        log_p = np.zeros((X.shape[0], len(self.classes_)))
        for member, head in zip(self.members, self.heads_):
            if head is None:
                continue
            columns = np.searchsorted(np.asarray(head.classes_), np.asarray(member)[self.classes_])
            log_p += np.log(np.clip(head_proba(head, X)[:, columns], 1e-12, None))
        log_p -= log_p.max(axis=1, keepdims=True)
        p = np.exp(log_p)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def hierarchical_head(head, hierarchy: str, tree: CategoryTree | None):
    """``head`` as training uses it: wrapped in :class:`LevelHeads` for ``per-level`` at a level
    below the first, as it is otherwise."""
    if tree is None or hierarchy != "per-level":
        return head
    return LevelHeads(head, [member.tolist() for member in tree.member])
