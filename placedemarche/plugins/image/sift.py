"""The `sift` image extractor: bag of visual words over OpenCV SIFT descriptors."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from placedemarche import ImageExtractor, hookimpl
from placedemarche.core.errors import ImageReadError
from placedemarche.core.progress import task


class SiftExtractor(ImageExtractor):
    """SIFT keypoints per image, quantised on a visual vocabulary, as TF-IDF histograms.

    The vocabulary (MiniBatchKMeans over a sample of the descriptors) and the IDF weights
    are learned from the images given to ``fit`` only. Images with no keypoint give a zero
    row. Descriptors are computed in a thread pool (OpenCV releases the GIL).

    Args:
        n_words: size of the visual vocabulary (reduced when there are too few descriptors).
        max_side: images are downscaled so their longer side is at most this many pixels.
        max_keypoints: strongest keypoints kept per image.
        max_descriptors_fit: descriptors sampled to learn the vocabulary (bounds memory).
        workers: threads for descriptor extraction (default: CPU count).
        random_state: seed of the sampling and of k-means.

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

    def _describe_one(self, path) -> np.ndarray:
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ImageReadError(f"sift: cannot decode image {path}")
        scale = self.max_side / max(image.shape)
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        sift = cv2.SIFT_create(nfeatures=self.max_keypoints)
        _, descriptors = sift.detectAndCompute(image, None)
        if descriptors is None:
            return np.zeros((0, 128), dtype=np.float32)
        return descriptors.astype(np.float32)

    def _describe(self, paths, label: str) -> list[np.ndarray]:
        self.require()
        paths = list(paths)
        results: list[np.ndarray] = [None] * len(paths)  # type: ignore[list-item]
        workers = self.workers or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=workers) as pool, task(label, total=len(paths)) as bar:
            futures = {pool.submit(self._describe_one, p): i for i, p in enumerate(paths)}
            for future in futures:  # in submission order; progress advances as each is done
                results[futures[future]] = future.result()
                bar.advance(1)
        return results

    def fit(self, X, y=None):
        descriptors = self._describe(X, "sift: descriptors (fit)")
        self._learn(descriptors)
        self._fitted_histograms_ = self._histograms(descriptors)
        self._fitted_inputs_ = [str(p) for p in X]
        return self

    def _learn(self, descriptors: list[np.ndarray]) -> None:
        from sklearn.cluster import MiniBatchKMeans

        stacked = np.concatenate([d for d in descriptors if len(d)] or [np.zeros((0, 128), np.float32)])
        if len(stacked) < 2:
            raise ImageReadError("sift: fewer than 2 keypoints in all the images given to fit")
        rng = np.random.default_rng(self.random_state)
        if len(stacked) > self.max_descriptors_fit:
            stacked = stacked[rng.choice(len(stacked), self.max_descriptors_fit, replace=False)]
        n_words = int(min(self.n_words, max(2, len(stacked) // 10)))
        self.vocabulary_ = MiniBatchKMeans(n_clusters=n_words, random_state=self.random_state,
                                           batch_size=4096, n_init=3).fit(stacked)
        counts = self._counts(descriptors)
        df = (counts > 0).sum(axis=0)
        self.idf_ = (np.log((1 + len(counts)) / (1 + df)) + 1.0).astype(np.float32)

    def _counts(self, descriptors: list[np.ndarray]) -> np.ndarray:
        n_words = self.vocabulary_.n_clusters
        counts = np.zeros((len(descriptors), n_words), dtype=np.float32)
        for i, d in enumerate(descriptors):
            if len(d):
                counts[i] = np.bincount(self.vocabulary_.predict(d), minlength=n_words)
        return counts

    def _histograms(self, descriptors: list[np.ndarray]) -> np.ndarray:
        weighted = self._counts(descriptors) * self.idf_
        norms = np.linalg.norm(weighted, axis=1, keepdims=True)
        return np.divide(weighted, norms, out=np.zeros_like(weighted), where=norms > 0)

    def transform(self, X):
        if getattr(self, "_fitted_inputs_", None) == [str(p) for p in X]:
            return self._fitted_histograms_  # fit_transform: descriptors already computed
        return self._histograms(self._describe(X, "sift: descriptors"))


@hookimpl
def register_image_extractors(register):
    register(SiftExtractor)
