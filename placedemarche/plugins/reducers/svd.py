"""The `svd` reducer: truncated SVD, the reducer for sparse matrices (LSA on TF-IDF)."""

from __future__ import annotations

from placedemarche import Reducer, hookimpl


class SVDReducer(Reducer):
    """Truncated singular value decomposition; works on sparse input without densifying.

    Args:
        n_components: number of components, capped at min(n_samples, n_features) - 1.
        random_state: seed of the randomised solver.

    Usage::

        lsa = SVDReducer(n_components=100).fit_transform(tfidf_matrix)
    """

    name = "svd"
    aliases = ("lsa",)
    description = "Truncated SVD (latent semantic analysis on sparse text features)"
    accepts_sparse = True

    def __init__(self, n_components: int = 100, random_state: int = 0):
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X, y=None):
        from sklearn.decomposition import TruncatedSVD

        X = self._validate_data(X)
        n = max(1, min(int(self.n_components), min(X.shape) - 1))
        self.model_ = TruncatedSVD(n_components=n, random_state=self.random_state).fit(X)
        return self

    def transform(self, X):
        self._check_fitted("model_")
        return self.model_.transform(self._validate_data(X, reset=False))


@hookimpl
def register_reducers(register):
    register(SVDReducer)
