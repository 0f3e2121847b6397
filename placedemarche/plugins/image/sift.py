"""The `sift` image extractor: bag of visual words over OpenCV SIFT descriptors."""

from __future__ import annotations

import numbers
import os
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np

from placedemarche import ImageExtractor, hookimpl
from placedemarche.core.errors import CatalogError, ImageReadError, PluginConfigError
from placedemarche.data.images import check_pixel_count, read_image_bytes, source_label
from placedemarche.core.progress import task

#: Fewest visual words the vocabulary is shrunk to when there are few descriptors.
MIN_WORDS = 8
#: Descriptors per visual word below which the vocabulary is shrunk (k-means needs a few
#: points per centre to place it anywhere meaningful).
DESCRIPTORS_PER_WORD = 10


def read_grayscale(source, max_side: int) -> np.ndarray:
    """A uint8 grayscale image whose longer side is at most ``max_side``; ``source`` is a local
    path, a URL or encoded bytes (``core.images.read_image_bytes``). Raises ImageReadError
    naming the source when it is missing or cannot be decoded."""
    import cv2

    label = source_label(source)
    data = read_image_bytes(source, "sift: ")
    image = None
    if data:
        # OpenCV would decode a 20000×20000 bomb (400 MB) before the downscale below
        check_pixel_count(data, "sift: ", label)
        try:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
        except cv2.error:  # e.g. past CV_IO_MAX_IMAGE_PIXELS when Pillow's limit is disabled
            image = None
    if image is None:
        raise ImageReadError(f"sift: cannot decode image {label}: the file is missing, empty or "
                             "corrupt; replace or remove it")
    scale = max_side / max(image.shape)
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image


class SiftExtractor(ImageExtractor):
    """SIFT keypoints per image, quantised on a visual vocabulary, as TF-IDF histograms.

    The vocabulary (MiniBatchKMeans over at most ``max_descriptors_fit`` sampled descriptors)
    and the IDF weights are learned from the images given to ``fit`` only. Each row is the
    IDF-weighted count of visual words in one image, L2-normalised; an image with no
    keypoint gives a zero row. Descriptors are computed in a thread pool (OpenCV releases
    the GIL) and kept as uint8 (SIFT values are integers 0..255): at most
    ``max_keypoints * 128`` bytes per image.

    Args:
        n_words: size of the visual vocabulary; shrunk to one word per 10 descriptors
            (at least 8) when ``fit`` gets too few descriptors.
        max_side: images are downscaled so their longer side is at most this many pixels.
        max_keypoints: strongest keypoints kept per image.
        max_descriptors_fit: descriptors sampled to learn the vocabulary (bounds memory
            and time of the k-means).
        workers: threads for descriptor extraction (default: CPU count, at most 8).
        random_state: seed of the descriptor sample and of k-means.

    Usage::

        X = SiftExtractor(n_words=300).fit_transform(image_paths)
    """

    name = "sift"
    aliases = ("bovw",)
    description = "SIFT descriptors -> visual words (MiniBatchKMeans) -> TF-IDF histograms"
    requires = ("cv2",)
    learns_from_data = True

    def __init__(self, n_words: int = 500, max_side: int = 384, max_keypoints: int = 500,
                 max_descriptors_fit: int = 200_000, workers: int | None = None, random_state: int = 0):
        self.n_words = n_words
        self.max_side = max_side
        self.max_keypoints = max_keypoints
        self.max_descriptors_fit = max_descriptors_fit
        self.workers = workers
        self.random_state = random_state

    # -- descriptors ------------------------------------------------------------------------
    def _describe_one(self, path) -> np.ndarray:
        import cv2

        image = read_grayscale(path, self.max_side)
        _, descriptors = cv2.SIFT_create(nfeatures=self.max_keypoints).detectAndCompute(image, None)
        if descriptors is None:
            return np.zeros((0, 128), dtype=np.uint8)
        # nfeatures keeps the strongest keypoints, but ties and extra orientations can exceed it.
        return descriptors[: self.max_keypoints].astype(np.uint8)

    def _describe_or_none(self, path) -> np.ndarray | None:
        try:
            return self._describe_one(path)
        except ImageReadError:
            return None

    def _describe(self, paths, label: str, skip_unreadable: bool = False) -> list[np.ndarray]:
        """Descriptors per image; with ``skip_unreadable``, None for an image that cannot be
        read instead of raising its ImageReadError."""
        self.require()
        paths = list(paths)
        results: list[np.ndarray | None] = [None] * len(paths)
        workers = self.workers or min(8, os.cpu_count() or 1)
        describe = self._describe_or_none if skip_unreadable else self._describe_one
        with ThreadPoolExecutor(max_workers=workers) as pool, task(label, total=len(paths)) as bar:
            futures = {pool.submit(describe, p): i for i, p in enumerate(paths)}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.advance(1)
            except BaseException:
                for future in futures:  # do not decode the rest after a bad image
                    future.cancel()
                raise
        return results  # type: ignore[return-value]

    # -- learning ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        for param, least in (("n_words", 2), ("max_side", 16), ("max_keypoints", 1),
                             ("max_descriptors_fit", 2)):
            value = getattr(self, param)
            if not isinstance(value, numbers.Integral) or value < least:
                raise PluginConfigError(f"sift: {param} must be an integer >= {least}, got {value!r}")

    def _learn(self, descriptors: list[np.ndarray]) -> None:
        from sklearn.cluster import MiniBatchKMeans

        total = sum(len(d) for d in descriptors)
        if total < MIN_WORDS:
            raise CatalogError(f"sift: only {total} keypoints in the {len(descriptors)} images "
                                 f"given to fit; need at least {MIN_WORDS} to learn visual words (blank images?)")
        stacked = np.concatenate([d for d in descriptors if len(d)])
        if len(stacked) > self.max_descriptors_fit:
            rng = np.random.default_rng(self.random_state)
            keep = np.sort(rng.choice(len(stacked), self.max_descriptors_fit, replace=False))
            stacked = stacked[keep]
        n_words = min(self.n_words, max(MIN_WORDS, len(stacked) // DESCRIPTORS_PER_WORD))
        # One k-means++ start: three cost twice the time for no lower inertia (measured on
        # 35,000 Flipkart descriptors, 500 words); k-means++ itself dominates the fit time.
        self.vocabulary_ = MiniBatchKMeans(n_clusters=n_words, random_state=self.random_state,
                                           batch_size=4096, n_init=1).fit(stacked.astype(np.float32))
        self.n_words_ = n_words
        counts = self._counts(descriptors)
        df = (counts > 0).sum(axis=0)
        self.idf_ = (np.log((1 + len(counts)) / (1 + df)) + 1.0).astype(np.float32)

    def _counts(self, descriptors: list[np.ndarray]) -> np.ndarray:
        counts = np.zeros((len(descriptors), self.n_words_), dtype=np.float32)
        for i, d in enumerate(descriptors):
            if len(d):
                words = self.vocabulary_.predict(d.astype(np.float32))
                counts[i] = np.bincount(words, minlength=self.n_words_)
        return counts

    def _histograms(self, descriptors: list[np.ndarray]) -> np.ndarray:
        weighted = self._counts(descriptors) * self.idf_
        norms = np.linalg.norm(weighted, axis=1, keepdims=True)
        return np.divide(weighted, norms, out=np.zeros_like(weighted), where=norms > 0)

    # -- the transformer API ----------------------------------------------------------------
    def fit(self, X, y=None):
        """Learn the visual words from the images of ``X`` that can be read; an unreadable
        one is left out of the vocabulary (and fails in ``transform``, e.g. as a failed row
        of ``pm extract``), counted in ``unreadable_in_fit_``."""
        self._check_params()
        described = self._describe(X, "sift: descriptors (fit)", skip_unreadable=True)
        self.unreadable_in_fit_ = sum(d is None for d in described)
        self._learn([d for d in described if d is not None])
        return self

    def transform(self, X):
        self._check_fitted("vocabulary_")
        return self._histograms(self._describe(X, "sift: descriptors"))

    def fit_transform(self, X, y=None):
        self._check_params()
        descriptors = self._describe(X, "sift: descriptors (fit)")  # computed once, used twice
        self._learn(descriptors)
        return self._histograms(descriptors)


@hookimpl
def register_image_extractors(register):
    register(SiftExtractor)
