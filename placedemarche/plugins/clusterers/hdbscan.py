"""The `hdbscan` clusterer: density-based clustering that finds its own number of clusters."""

from __future__ import annotations

from placedemarche import Clusterer, hookimpl


class HDBSCANClusterer(Clusterer):
    """Hierarchical density-based clustering (scikit-learn's HDBSCAN): clusters are dense
    regions that persist over a range of densities; products in no dense region are noise
    (label ``-1``). It takes no number of clusters and no seed (it is deterministic), so in
    an evaluation its seeds differ only through the t-SNE map. High-dimensional spaces,
    where distances concentrate, tend to leave most products as noise.

    Args:
        min_cluster_size: smallest group of products called a cluster (scikit-learn's default).
        min_samples: neighbours that make a point a core point (None: min_cluster_size).
        cluster_selection_method: ``eom`` (excess of mass) or ``leaf`` (finer clusters).

    Usage::

        labels = HDBSCANClusterer(min_cluster_size=10).fit_predict(X)   # -1: noise
    """

    name = "hdbscan"
    description = "HDBSCAN: density-based, finds its own number of clusters, labels noise -1"
    needs_n_clusters = False

    def __init__(self, min_cluster_size: int = 5, min_samples: int | None = None,
                 cluster_selection_method: str = "eom"):
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.cluster_selection_method = cluster_selection_method

    def fit_predict(self, X, y=None):
        from sklearn.cluster import HDBSCAN

        X = self._validate_data(X)

        self.model_ = HDBSCAN(min_cluster_size=self.min_cluster_size, min_samples=self.min_samples,
                              cluster_selection_method=self.cluster_selection_method, copy=True)
        self.labels_ = self.model_.fit_predict(X)
        return self.labels_


@hookimpl
def register_clusterers(register):
    register(HDBSCANClusterer)
