"""The `pca` reducer: principal component analysis (truncated SVD for sparse input)."""

from __future__ import annotations

from placedemarche import Reducer, hookimpl


class PCAReducer(Reducer):
    """Projects features on their first principal components.

    Sparse input (TF-IDF, bag of words) cannot be centred without densifying it, so it is
    reduced with a truncated SVD instead (latent semantic analysis), as the `svd` reducer does.

    Args:
        n_components: number of components, capped at min(n_samples, n_features) - 1;
            a float in (0, 1) keeps that fraction of the variance (dense input only).
        whiten: scale components to unit variance.
        random_state: seed of the randomised solver.

    Usage::

        X2 = PCAReducer(n_components=50).fit_transform(X)
    """

    name = "pca"
    description = "Principal component analysis (truncated SVD on sparse input)"
    accepts_sparse = True  # a truncated SVD, never a densified matrix

    def __init__(self, n_components: int | float = 50, whiten: bool = False, random_state: int = 0):
        self.n_components = n_components
        self.whiten = whiten
        self.random_state = random_state

    def fit(self, X, y=None):
        import scipy.sparse
        from sklearn.decomposition import PCA, TruncatedSVD

        X = self._validate_data(X)
        n = self.n_components
        limit = max(1, min(X.shape) - 1)
        if isinstance(n, int) or (isinstance(n, float) and n >= 1):
            n = min(int(n), limit)
        if scipy.sparse.issparse(X):
            self.model_ = TruncatedSVD(n_components=n if isinstance(n, int) else limit,
                                       random_state=self.random_state)
        else:
            self.model_ = PCA(n_components=n, whiten=self.whiten, random_state=self.random_state)
        self.model_.fit(X)
        return self

    def transform(self, X):
        self._check_fitted("model_")
        return self.model_.transform(self._validate_data(X, reset=False))

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)


@hookimpl
def register_reducers(register):
    register(PCAReducer)
