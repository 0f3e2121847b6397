"""The `umap` reducer: UMAP manifold embedding (optional extra `umap`)."""

from __future__ import annotations

from placedemarche import Reducer, hookimpl


class UMAPReducer(Reducer):
    """Uniform manifold approximation and projection (umap-learn).

    Args:
        n_components: output dimensions.
        n_neighbors: size of the local neighbourhood.
        min_dist: how tightly points may pack.
        metric: distance in the input space.
        random_state: seed (fixing it makes UMAP single-threaded).

    Usage::

        xy = UMAPReducer().fit_transform(X)
    """

    name = "umap"
    description = "UMAP manifold embedding"
    requires = ("umap",)
    extra = "umap"

    def __init__(self, n_components: int = 2, n_neighbors: int = 15, min_dist: float = 0.1,
                 metric: str = "euclidean", random_state: int = 0):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.random_state = random_state

    def fit(self, X, y=None):
        self.require()
        import umap

        X = self._validate_data(X)
        self.model_ = umap.UMAP(n_components=self.n_components, n_neighbors=self.n_neighbors,
                                min_dist=self.min_dist, metric=self.metric,
                                random_state=self.random_state).fit(X)
        return self

    def transform(self, X):
        self._check_fitted("model_")
        return self.model_.transform(self._validate_data(X, reset=False))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # umap-learn returns float32 for any input
        return tags


@hookimpl
def register_reducers(register):
    register(UMAPReducer)
