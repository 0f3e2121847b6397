"""The `logreg` classifier head: multinomial logistic regression (the default head)."""

from __future__ import annotations

from placedemarche import Classifier, hookimpl


class LogisticRegressionHead(Classifier):
    """Logistic regression on a block's scaled features: the default head of ``pm train``.

    Args:
        C: inverse regularisation (``pm train --C`` unless the spec sets it).
        class_weight: ``"balanced"`` weighs classes inversely to their frequency
            (``pm train --class-weight``), None weighs them alike.
        max_iter: most iterations of the solver.
        solver: scikit-learn's solver.
        random_state: seed (``pm train --seed``).

    Usage::

        head = LogisticRegressionHead(C=0.5).fit(X, y)
        proba = head.predict_proba(X_new)        # columns in head.classes_ order
    """

    name = "logreg"
    description = "Logistic regression (default head)"

    def __init__(self, C: float = 10.0, class_weight: str | None = None, max_iter: int = 5000,
                 solver: str = "lbfgs", random_state: int = 0):
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.solver = solver
        self.random_state = random_state

    def make_estimator(self, X, y):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight,
                                             solver=self.solver, random_state=self.random_state)


@hookimpl
def register_classifiers(register):
    register(LogisticRegressionHead)
