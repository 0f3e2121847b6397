"""The `svm` classifier head: an RBF-kernel SVM with calibrated probabilities."""

from __future__ import annotations

from placedemarche import Classifier, hookimpl


class RBFSVMHead(Classifier):
    """A support vector machine with an RBF kernel; probabilities from a sigmoid calibration
    on ``cv`` internal folds (``SVC(probability=True)`` is deprecated).

    Args:
        C: inverse regularisation (``pm train --C`` unless the spec sets it).
        class_weight: ``"balanced"`` or None (``pm train --class-weight``).
        cv: calibration folds.
        random_state: seed (``pm train --seed``).

    Usage::

        proba = RBFSVMHead(C=10.0).fit(X, y).predict_proba(X_new)
    """

    name = "svm"
    description = "RBF-kernel SVM, sigmoid-calibrated probabilities"

    def __init__(self, C: float = 10.0, class_weight: str | None = None, cv: int = 3, random_state: int = 0):
        self.C = C
        self.class_weight = class_weight
        self.cv = cv
        self.random_state = random_state

    def make_estimator(self, X, y):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        svm = SVC(C=self.C, kernel="rbf", class_weight=self.class_weight, random_state=self.random_state)
        return CalibratedClassifierCV(svm, cv=self.cv, ensemble=False)


@hookimpl
def register_classifiers(register):
    register(RBFSVMHead)
