"""The `rf` classifier head: a random forest."""

from __future__ import annotations

from placedemarche import Classifier, hookimpl


class RandomForestHead(Classifier):
    """A random forest of ``n_estimators`` trees, on every core (``n_jobs=-1``).

    Args:
        n_estimators: number of trees.
        class_weight: ``"balanced"`` or None (``pm train --class-weight``).
        n_jobs: parallel jobs (-1: every core).
        random_state: seed (``pm train --seed``).

    Usage::

        proba = RandomForestHead(n_estimators=200).fit(X, y).predict_proba(X_new)
    """

    name = "rf"
    description = "Random forest"
    accepts_nan = True  # scikit-learn's trees split on missing values

    def __init__(self, n_estimators: int = 500, class_weight: str | None = None, n_jobs: int = -1,
                 random_state: int = 0):
        self.n_estimators = n_estimators
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def make_estimator(self, X, y):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=self.n_estimators, class_weight=self.class_weight,
                                                 n_jobs=self.n_jobs, random_state=self.random_state)


@hookimpl
def register_classifiers(register):
    register(RandomForestHead)
