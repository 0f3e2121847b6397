"""Example placedemarche plugins: an HSV colour histogram and hashed character n-grams."""

from __future__ import annotations

import numpy as np

from placedemarche import ImageExtractor, TextExtractor, hookimpl
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


@hookimpl
def register_image_extractors(register):
    register(ColourHistogramExtractor)


@hookimpl
def register_text_extractors(register):
    register(CharNgramExtractor)
