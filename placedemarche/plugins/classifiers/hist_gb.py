"""The `hist-gb` classifier head: histogram-based gradient boosting (dense input)."""

from __future__ import annotations

from placedemarche import Classifier, hookimpl


class HistGradientBoostingHead(Classifier):
    """Gradient-boosted trees on binned features (scikit-learn's
    ``HistGradientBoostingClassifier``). It takes dense input only (``accepts_sparse =
    False``): sparse blocks such as TF-IDF are densified first, which costs memory for wide
    vocabularies; it suits dense embeddings better.

    Args:
        max_iter: most boosting iterations (early stopping on a validation split when the
            training set has over 10 000 rows, scikit-learn's ``"auto"``).
        learning_rate: shrinkage.
        max_leaf_nodes: leaves per tree.
        class_weight: ``"balanced"`` or None (``pm train --class-weight``).
        random_state: seed (``pm train --seed``).

    Usage::

        proba = HistGradientBoostingHead(max_iter=100).fit(X, y).predict_proba(X_new)
    """

    name = "hist-gb"
    description = "Histogram gradient boosting (dense features)"
    accepts_sparse = False
    accepts_nan = True  # missing values go to the best side of each split

    def __init__(self, max_iter: int = 200, learning_rate: float = 0.1, max_leaf_nodes: int = 31,
                 class_weight: str | None = None, random_state: int = 0):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.class_weight = class_weight
        self.random_state = random_state

    def make_estimator(self, X, y):
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
            class_weight=self.class_weight, random_state=self.random_state)


@hookimpl
def register_classifiers(register):
    register(HistGradientBoostingHead)
