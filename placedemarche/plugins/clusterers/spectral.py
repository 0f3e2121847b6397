"""The `spectral` clusterer: spectral clustering of the k-nearest-neighbours graph."""

from __future__ import annotations

from placedemarche import Clusterer, hookimpl


class SpectralClusterer(Clusterer):
    """Builds the symmetric k-nearest-neighbours graph of the products, embeds it with the
    eigenvectors of its Laplacian and clusters that embedding (k-means). It follows the
    neighbourhoods, so it finds clusters of any shape k-means would cut. Sparse input is
    used as is (the neighbours are searched on it). Its exact neighbour search compares every
    pair of rows (time quadratic in the rows), so past ``max_rows`` it refuses with a
    one-line error naming ``kmeans``.

    Args:
        n_clusters: number of clusters (the evaluator passes the number of categories).
        n_neighbors: neighbours per product in the graph.
        assign_labels: how the spectral embedding is clustered: ``kmeans``,
            ``discretize`` or ``cluster_qr``.
        random_state: seed of the eigensolver and of the k-means step.
        max_rows: most rows accepted.

    Usage::

        labels = SpectralClusterer(n_clusters=7, random_state=0).fit_predict(X)
    """

    name = "spectral"
    description = "Spectral clustering of the nearest-neighbours graph"
    accepts_sparse = True

    def __init__(self, n_clusters: int = 8, n_neighbors: int = 10, assign_labels: str = "kmeans",
                 random_state: int = 0, max_rows: int = 50_000):
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.assign_labels = assign_labels
        self.random_state = random_state
        self.max_rows = max_rows

    def fit_predict(self, X, y=None):
        from sklearn.cluster import SpectralClustering

        from placedemarche.core.limits import refuse_above

        X = self._validate_data(X, ensure_min_samples=2)

        refuse_above(self.name, X.shape[0], self.max_rows, "its neighbour search compares every pair of rows")

        self.model_ = SpectralClustering(n_clusters=self.n_clusters, affinity="nearest_neighbors",
                                         n_neighbors=min(self.n_neighbors, X.shape[0] - 1),
                                         assign_labels=self.assign_labels,
                                         random_state=self.random_state)
        self.labels_ = self.model_.fit_predict(X)
        return self.labels_


@hookimpl
def register_clusterers(register):
    register(SpectralClusterer)
