"""The `linear-svm` classifier head: a linear SVM with calibrated probabilities."""

from __future__ import annotations

from placedemarche import Classifier, hookimpl


class LinearSVMHead(Classifier):
    """A linear support vector machine whose decision values are turned into probabilities by
    a sigmoid calibration on ``cv`` internal folds of the training rows (a linear SVM has no
    probabilities of its own). Fast on wide sparse features such as TF-IDF.

    Args:
        C: inverse regularisation (``pm train --C`` unless the spec sets it).
        class_weight: ``"balanced"`` or None (``pm train --class-weight``).
        cv: calibration folds (fewer when a class has fewer training rows, at least 2).
        max_iter: most iterations of the solver.
        random_state: seed (``pm train --seed``).

    Usage::

        proba = LinearSVMHead(C=1.0).fit(X, y).predict_proba(X_new)
    """

    name = "linear-svm"
    description = "Linear SVM, sigmoid-calibrated probabilities"

    def __init__(self, C: float = 10.0, class_weight: str | None = None, cv: int = 3, max_iter: int = 10000,
                 random_state: int = 0):
        self.C = C
        self.class_weight = class_weight
        self.cv = cv
        self.max_iter = max_iter
        self.random_state = random_state

    def make_estimator(self, X, y):
        import numpy as np
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import LinearSVC

        smallest = int(np.min(np.unique(np.asarray(y), return_counts=True)[1]))
        svm = LinearSVC(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter,
                        random_state=self.random_state)
        return CalibratedClassifierCV(svm, cv=max(2, min(self.cv, smallest)), ensemble=False)

    def fit(self, X, y):
        super().fit(X, y)
        # iterations of the SVM fitted on every training row (the calibration's folds aside)
        self.n_iter_ = self.estimator_.calibrated_classifiers_[0].estimator.n_iter_
        return self


@hookimpl
def register_classifiers(register):
    register(LinearSVMHead)
