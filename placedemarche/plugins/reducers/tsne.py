"""The `tsne` reducer: t-SNE, for 2-D maps and for clustering on a neighbourhood embedding."""

from __future__ import annotations

from placedemarche import Reducer, hookimpl


class TSNEReducer(Reducer):
    """t-distributed stochastic neighbour embedding (scikit-learn).

    t-SNE has no ``transform`` for new points: use it on the products being studied only,
    never as classifier input fitted on test products. Its settings are fixed beforehand;
    tuning them on the ARI would use the labels.

    Args:
        n_components: output dimensions (2 for maps).
        perplexity: effective number of neighbours; capped below the number of samples.
        init: "pca" (stable) or "random".
        random_state: seed.

    Usage::

        xy = TSNEReducer(random_state=0).fit_transform(X)
    """

    name = "tsne"
    aliases = ("t-sne",)
    description = "t-SNE neighbour embedding (2-D maps; no transform for new points)"
    can_transform = False

    def __init__(self, n_components: int = 2, perplexity: float = 30.0, init: str = "pca",
                 random_state: int = 0):
        self.n_components = n_components
        self.perplexity = perplexity
        self.init = init
        self.random_state = random_state

    def fit(self, X, y=None):
        self.fit_transform(X)
        return self

    def fit_transform(self, X, y=None):
        import scipy.sparse
        from sklearn.manifold import TSNE

        if scipy.sparse.issparse(X):
            X = X.toarray()
        perplexity = min(float(self.perplexity), max(1.0, (X.shape[0] - 1) / 3))
        model = TSNE(n_components=self.n_components, perplexity=perplexity, init=self.init,
                     random_state=self.random_state)
        self.embedding_ = model.fit_transform(X)
        return self.embedding_

    def transform(self, X):
        raise NotImplementedError("t-SNE cannot place new points: use fit_transform")


@hookimpl
def register_reducers(register):
    register(TSNEReducer)
