"""Feature spaces for clustering: row scaling, reduction, and the fusion of modality blocks.

Sparse matrices (TF-IDF, bag of words) are always L2-normalised, never standard-scaled (that
destroys their clustering), and reach reducers without sparse support as their LSA.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from placedemarche.core.plugins import create_plugin

SCALINGS = ("l2", "standard", "none")
TSNE_INPUTS = ("auto", "features", "reduced")


def scale_rows(X, scale: str):
    """Row-scale features; sparse input is always L2-normalised, never standard-scaled."""
    import scipy.sparse
    from sklearn.preprocessing import StandardScaler, normalize

    if scipy.sparse.issparse(X):
        return normalize(X.tocsr().astype(np.float32))
    X = np.asarray(X, dtype=np.float32)
    if scale == "l2":
        return normalize(X)
    if scale == "standard":
        return StandardScaler().fit_transform(X)
    return X


def reduce_features(X, reducer_spec: str):
    import scipy.sparse

    reducer = create_plugin("reducer", reducer_spec)
    if scipy.sparse.issparse(X) and not reducer.accepts_sparse:
        # A reducer that declares no sparse support would densify a vocabulary-wide matrix:
        # it gets the matrix's LSA (truncated SVD to 100 dimensions) instead.
        X = reduce_features(X, "svd:n_components=100")
    return np.asarray(reducer.fit_transform(X), dtype=np.float32)


def unit_block(X) -> Any:
    """Scale a block so its mean squared row norm is 1: blocks of any width weigh alike."""
    import scipy.sparse

    if scipy.sparse.issparse(X):
        norm = math.sqrt(X.multiply(X).sum() / X.shape[0])
    else:
        norm = math.sqrt(float(np.mean(np.sum(np.square(X), axis=1))))
    return X / norm if norm > 0 else X


def fuse_blocks(blocks: Sequence[Any], weights: Sequence[float]):
    import scipy.sparse

    scaled = [unit_block(b) * math.sqrt(w) for b, w in zip(blocks, weights)]
    if any(scipy.sparse.issparse(b) for b in scaled):
        return scipy.sparse.hstack([scipy.sparse.csr_matrix(b) for b in scaled]).tocsr()
    return np.hstack(scaled).astype(np.float32)


def tsne_input_for(choice: str, blocks: Sequence[Any]) -> str:
    """Resolve ``auto``: embed dense features directly, reduce first when a block is sparse."""
    import scipy.sparse

    if choice != "auto":
        return choice
    return "reduced" if any(scipy.sparse.issparse(b) for b in blocks) else "features"
