"""Reducer capabilities: which reducers take sparse input, and what the evaluator gives the others."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from placedemarche import Reducer, hookimpl
from placedemarche.evaluate.fusion import reduce_features
from placedemarche.core import plugins

SEEN: list = []  # what the spy reducers were given


class _DenseOnly(Reducer):
    name = "dense-only-test"

    def __init__(self, n_components: int = 2):
        self.n_components = n_components

    def fit_transform(self, X, y=None):
        SEEN.append(X)
        X = X.toarray() if scipy.sparse.issparse(X) else X
        return X[:, : self.n_components]


class _SparseFriendly(_DenseOnly):
    name = "sparse-friendly-test"
    accepts_sparse = True


class _SpyReducers:
    @staticmethod
    @hookimpl
    def register_reducers(register):
        register(_DenseOnly)
        register(_SparseFriendly)


@pytest.fixture
def spy_reducers():
    SEEN.clear()
    name = plugins.register_plugin(_SpyReducers, name="spy-reducers", provider="tests")
    yield
    plugins.unregister_plugin(name)


@pytest.fixture
def tfidf_like():
    return scipy.sparse.random(40, 300, density=0.05, format="csr", random_state=0, dtype=np.float32)


def test_builtin_reducers_declare_sparse_support():
    declared = {name: entry.cls.accepts_sparse for name, entry in plugins.available_plugins("reducer").items()}
    assert {k: declared[k] for k in ("pca", "svd", "tsne", "umap")} == {
        "pca": True, "svd": True, "tsne": False, "umap": False}
    assert Reducer.accepts_sparse is False  # a third-party reducer opts in


def test_pca_and_svd_keep_a_sparse_matrix_sparse(tfidf_like):
    from sklearn.decomposition import TruncatedSVD

    for spec in ("pca:n_components=5", "svd:n_components=5", "lsa:n_components=5"):
        reducer = plugins.create_plugin("reducer", spec)
        assert reducer.fit_transform(tfidf_like).shape == (40, 5)
        assert isinstance(reducer.model_, TruncatedSVD), spec


def test_evaluator_gives_sparse_input_only_to_reducers_that_accept_it(spy_reducers, tfidf_like):
    out = reduce_features(tfidf_like, "sparse-friendly-test:n_components=3")
    assert scipy.sparse.issparse(SEEN[-1]) and SEEN[-1].shape == (40, 300)
    assert out.shape == (40, 3) and out.dtype == np.float32

    reduce_features(tfidf_like, "dense-only-test:n_components=3")
    # the LSA of the matrix: 100 dimensions, capped below the 40 rows
    assert not scipy.sparse.issparse(SEEN[-1]) and SEEN[-1].shape == (40, 39)

    dense = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    reduce_features(dense, "dense-only-test:n_components=3")
    assert SEEN[-1] is dense  # dense input is passed as it is
