"""The `mlp` classifier head: a one-hidden-layer perceptron with early stopping."""

from __future__ import annotations

import math

from placedemarche import Classifier, hookimpl


class MLPHead(Classifier):
    """A multi-layer perceptron (scikit-learn's ``MLPClassifier``, Adam) that stops when the
    score on a stratified ``validation_fraction`` of the training rows stops improving.

    Early stopping needs that validation split to hold every class: with too few training
    rows for it (fewer validation rows than classes or than two, or a class of one row) the network
    trains without it, for ``max_iter`` epochs at most.

    Args:
        hidden_layer_sizes: sizes of the hidden layers.
        alpha: L2 penalty.
        learning_rate_init: Adam's learning rate.
        max_iter: most epochs.
        early_stopping: stop on the validation score (see above).
        validation_fraction: share of the training rows held out for early stopping.
        n_iter_no_change: epochs without improvement before stopping.
        random_state: seed (``pm train --seed``).

    Usage::

        proba = MLPHead(hidden_layer_sizes=(128,)).fit(X, y).predict_proba(X_new)
    """

    name = "mlp"
    description = "Multi-layer perceptron with early stopping"

    def __init__(self, hidden_layer_sizes: tuple[int, ...] = (256,), alpha: float = 1e-3,
                 learning_rate_init: float = 1e-2, max_iter: int = 500, early_stopping: bool = True,
                 validation_fraction: float = 0.1, n_iter_no_change: int = 10, random_state: int = 0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state

    def make_estimator(self, X, y):
        import numpy as np
        from sklearn.neural_network import MLPClassifier

        counts = np.unique(np.asarray(y), return_counts=True)[1]
        held_out = math.ceil(self.validation_fraction * len(y))
        # scikit-learn's early stopping needs two validation rows at least
        can_stop_early = (held_out >= max(2, len(counts)) and len(y) - held_out >= len(counts)
                          and counts.min() >= 2)
        self.early_stopping_used_ = bool(self.early_stopping and can_stop_early)
        return MLPClassifier(
            hidden_layer_sizes=tuple(self.hidden_layer_sizes), alpha=self.alpha,
            learning_rate_init=self.learning_rate_init, max_iter=self.max_iter,
            early_stopping=self.early_stopping_used_, validation_fraction=self.validation_fraction,
            n_iter_no_change=self.n_iter_no_change, random_state=self.random_state)


@hookimpl
def register_classifiers(register):
    register(MLPHead)
