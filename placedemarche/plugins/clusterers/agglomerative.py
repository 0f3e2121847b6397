"""The `agglomerative` clusterer: hierarchical clustering with Ward linkage."""

from __future__ import annotations

from placedemarche import Clusterer, hookimpl


class AgglomerativeClusterer(Clusterer):
    """Bottom-up hierarchical clustering, merging the pair of clusters that least increases
    the within-cluster variance (Ward linkage, Euclidean distances). Deterministic: it takes
    no seed. Memory and time grow with the square of the number of rows (a distance per pair of
    rows: 1.6 GB at 20,000), so past ``max_rows`` it refuses with a one-line error naming
    ``kmeans`` rather than exhausting memory.

    Args:
        n_clusters: number of clusters (the evaluator passes the number of categories).
        linkage: ``ward``, ``complete``, ``average`` or ``single``.
        max_rows: most rows accepted.

    Usage::

        labels = AgglomerativeClusterer(n_clusters=7).fit_predict(X)
    """

    name = "agglomerative"
    aliases = ("ward",)
    description = "Hierarchical clustering, Ward linkage (deterministic)"

    def __init__(self, n_clusters: int = 8, linkage: str = "ward", max_rows: int = 20_000):
        self.n_clusters = n_clusters
        self.linkage = linkage
        self.max_rows = max_rows

    def fit_predict(self, X, y=None):
        from sklearn.cluster import AgglomerativeClustering

        from placedemarche.core.limits import refuse_above

        X = self._validate_data(X)

        refuse_above(self.name, X.shape[0], self.max_rows, "memory grows with the square of the rows")

        self.model_ = AgglomerativeClustering(n_clusters=self.n_clusters, linkage=self.linkage)
        self.labels_ = self.model_.fit_predict(X)
        return self.labels_


@hookimpl
def register_clusterers(register):
    register(AgglomerativeClusterer)
