"""The `kmeans` clusterer: k-means, switching to mini-batch k-means on large catalogues."""

from __future__ import annotations

from placedemarche import Clusterer, hookimpl
from placedemarche.core.scale import APPROXIMATE_ABOVE


class KMeansClusterer(Clusterer):
    """k-means with ``n_init`` restarts (the evaluator's default clusterer).

    Up to ``minibatch_above`` rows it is exactly scikit-learn's
    ``KMeans(n_clusters, n_init=10, random_state)``, so results match earlier evaluations;
    past it, ``MiniBatchKMeans`` (same ``n_init``), whose cost per iteration does not grow
    with the number of rows. Sparse input (TF-IDF, bag of words) is clustered as is. The
    evaluator sets ``minibatch_above`` to its own size threshold (``--approximate-above``) and
    reports the switch as an approximation.

    Args:
        n_clusters: number of clusters (the evaluator passes the number of categories).
        n_init: restarts from different centroids; the best inertia is kept.
        random_state: seed of the centroid initialisation.
        minibatch_above: row count past which mini-batch k-means is used (the evaluator's
            threshold, :data:`placedemarche.core.scale.APPROXIMATE_ABOVE`, by default).
        batch_size: mini-batch size of mini-batch k-means.

    Usage::

        labels = KMeansClusterer(n_clusters=7, random_state=0).fit_predict(X)
    """

    name = "kmeans"
    description = "k-means (mini-batch k-means past minibatch_above rows)"
    accepts_sparse = True

    def __init__(self, n_clusters: int = 8, n_init: int = 10, random_state: int = 0,
                 minibatch_above: int = APPROXIMATE_ABOVE, batch_size: int = 4096):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.random_state = random_state
        self.minibatch_above = minibatch_above
        self.batch_size = batch_size

    def approximation(self, rows: int) -> str | None:
        """What replaces exact k-means at this many rows (None: nothing)."""
        if rows <= self.minibatch_above:
            return None
        return (f"MiniBatchKMeans (batch {self.batch_size}, n_init {self.n_init}) instead of KMeans "
                f"past {self.minibatch_above} rows")

    def fit_predict(self, X, y=None):
        from sklearn.cluster import KMeans, MiniBatchKMeans

        if X.shape[0] > self.minibatch_above:
            self.model_ = MiniBatchKMeans(n_clusters=self.n_clusters, n_init=self.n_init,
                                          batch_size=self.batch_size, random_state=self.random_state)
        else:
            self.model_ = KMeans(n_clusters=self.n_clusters, n_init=self.n_init,
                                 random_state=self.random_state)
        self.labels_ = self.model_.fit_predict(X)
        return self.labels_


@hookimpl
def register_clusterers(register):
    register(KMeansClusterer)
