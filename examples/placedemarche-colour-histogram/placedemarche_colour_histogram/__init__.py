"""Example placedemarche plugins: an HSV colour histogram, hashed character n-grams, a
quantile-bins clusterer and a nearest-centroid classifier head."""

from __future__ import annotations

import numpy as np

from placedemarche import Classifier, Clusterer, ImageExtractor, TextExtractor, hookimpl
from placedemarche.core.errors import ImageReadError
from placedemarche.core.progress import track


class ColourHistogramExtractor(ImageExtractor):
    """HSV colour histogram of each image, L1-normalised.

    Args:
        bins: number of bins for hue, saturation and value.

    Usage::

        X = ColourHistogramExtractor(bins=(8, 4, 4)).fit_transform(["a.jpg", "b.jpg"])
    """

    name = "colour-histogram"
    aliases = ("color-histogram",)  # `pm evaluate --image color-histogram` finds it too
    description = "HSV colour histogram (example third-party plugin)"
    # No `requires`: cv2 is one of placedemarche's own dependencies, so it is always there.

    def __init__(self, bins: tuple[int, int, int] = (8, 4, 4)):
        self.bins = bins

    def transform(self, X):
        # A no-op while `requires` is empty; a copy that adds a dependency fails cleanly here.
        self.require()
        import cv2

        rows = []
        for path in track(list(X), "colour-histogram"):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise ImageReadError(f"colour-histogram: cannot decode image {path}")
            hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
            hist = cv2.calcHist([hsv], [0, 1, 2], None, list(self.bins), [0, 180, 0, 256, 0, 256])
            hist = hist.flatten()
            rows.append(hist / max(hist.sum(), 1.0))
        return np.asarray(rows, dtype=np.float32)


class CharNgramExtractor(TextExtractor):
    """Hashed character n-grams (no vocabulary to learn), L2-normalised.

    Args:
        ngram_range: character n-gram lengths.
        n_features: hashing space size.

    Usage::

        X = CharNgramExtractor().fit_transform(["steel watch", "cotton towel"])
    """

    name = "char-ngrams"
    description = "Hashed character n-grams (example third-party plugin)"

    def __init__(self, ngram_range: tuple[int, int] = (3, 5), n_features: int = 2**18):
        self.ngram_range = ngram_range
        self.n_features = n_features

    def transform(self, X):
        self.require()
        from sklearn.feature_extraction.text import HashingVectorizer

        vectorizer = HashingVectorizer(analyzer="char_wb", ngram_range=tuple(self.ngram_range),
                                       n_features=self.n_features, alternate_sign=False)
        return vectorizer.transform(list(X))


class NearestCentroidHead(Classifier):
    """A classifier head: each category is the mean of its training rows (its centroid), and
    a product's probabilities are the softmax of its negative Euclidean distances to the
    centroids. numpy only, sparse input accepted: an example of the classifier contract
    (``fit(X, y)``, ``classes_``, ``predict_proba(X)`` in ``classes_`` order).

    Args:
        temperature: softmax temperature (lower: more confident probabilities).

    Usage::

        proba = NearestCentroidHead().fit(X, y).predict_proba(X_new)
        # pm train --text tfidf --classifier nearest-centroid:temperature=0.5
    """

    name = "nearest-centroid"
    description = "Nearest category centroid, softmax of distances (example third-party plugin)"

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def fit(self, X, y):
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        self.centroids_ = np.vstack([np.asarray(X[y == c].mean(axis=0)).ravel() for c in self.classes_])
        return self

    def predict_proba(self, X):
        squared = X.multiply(X).sum(axis=1) if hasattr(X, "multiply") else np.square(X).sum(axis=1)
        d2 = (np.asarray(squared).reshape(-1, 1) - 2 * np.asarray(X @ self.centroids_.T)
              + np.square(self.centroids_).sum(axis=1))
        logits = -np.sqrt(np.maximum(d2, 0.0)) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)  # exp() of large negatives only: no overflow
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)


class QuantileBinsClusterer(Clusterer):
    """Projects the products on their first principal axis and cuts it into ``n_clusters``
    bins holding equally many products. Deterministic, numpy only: an example of the
    clusterer contract (``fit_predict(X) -> labels``), not a method to use.

    Args:
        n_clusters: number of bins (the evaluator passes the number of categories).

    Usage::

        labels = QuantileBinsClusterer(n_clusters=3).fit_predict(X)
    """

    name = "quantile-bins"
    description = "Equal-count bins along the first principal axis (example third-party plugin)"

    def __init__(self, n_clusters: int = 8):
        self.n_clusters = n_clusters

    def fit_predict(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        centred = X - X.mean(axis=0)
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
        projection = centred @ axis
        ranks = np.argsort(np.argsort(projection, kind="stable"), kind="stable")
        self.labels_ = (ranks * self.n_clusters // len(ranks)).astype(np.int64)
        return self.labels_


@hookimpl
def register_clusterers(register):
    register(QuantileBinsClusterer)


@hookimpl
def register_image_extractors(register):
    register(ColourHistogramExtractor)


@hookimpl
def register_text_extractors(register):
    register(CharNgramExtractor)


@hookimpl
def register_classifiers(register):
    register(NearestCentroidHead)
