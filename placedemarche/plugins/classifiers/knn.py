"""The `knn` classifier head: k nearest neighbours by cosine distance."""

from __future__ import annotations

from placedemarche import Classifier, hookimpl


class KNeighborsHead(Classifier):
    """The categories of the ``n_neighbors`` nearest training products, weighted by the
    inverse of their distance. Cosine distance by default: it compares the direction of
    feature vectors (what an embedding or a TF-IDF row says), not their length.

    Args:
        n_neighbors: neighbours that vote (at most the number of training rows).
        metric: scikit-learn metric (``"cosine"``, ``"euclidean"``, ...).
        weights: ``"distance"`` or ``"uniform"``.

    Usage::

        proba = KNeighborsHead(n_neighbors=5).fit(X, y).predict_proba(X_new)
    """

    name = "knn"
    description = "k nearest neighbours, cosine distance"

    def __init__(self, n_neighbors: int = 10, metric: str = "cosine", weights: str = "distance"):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.weights = weights

    def make_estimator(self, X, y):
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=min(self.n_neighbors, X.shape[0]), metric=self.metric,
                                               weights=self.weights)


@hookimpl
def register_classifiers(register):
    register(KNeighborsHead)
