"""The `word2vec` text extractor: gensim Word2Vec trained on the catalogue, pooled per text."""

from __future__ import annotations

import hashlib

import numpy as np

from placedemarche import TextExtractor, hookimpl
from placedemarche.core.text import TextPreprocessor


def stable_hash(text: str) -> int:
    """Process-independent hash for gensim's vector initialisation (``hash()`` is salted)."""
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:4], "little")


class Word2VecExtractor(TextExtractor):
    """Word vectors learned from the texts given to ``fit``, averaged per text.

    Texts with no known word get a zero vector. Training is single-threaded and seeded, so
    the same texts and parameters give the same vectors.

    Args:
        vector_size: dimension of the word vectors.
        window: context window.
        min_count: ignore words rarer than this in the training texts.
        epochs: training passes.
        sg: 1 for skip-gram, 0 for CBOW.
        pooling: "mean", or "tfidf" for an IDF-weighted mean (IDF learned in ``fit``).
        normalise: "lemma", "stem" or "none" (see placedemarche.core.text).
        seed: random seed.

    Usage::

        X = Word2VecExtractor(vector_size=100).fit_transform(texts)
    """

    name = "word2vec"
    aliases = ("w2v",)
    description = "Word2Vec (gensim) trained on the catalogue, mean or TF-IDF-weighted pooling"
    requires = ("gensim",)
    learns_from_data = True

    def __init__(self, vector_size: int = 100, window: int = 5, min_count: int = 2, epochs: int = 30,
                 sg: int = 1, pooling: str = "tfidf", normalise: str = "lemma", seed: int = 0):
        self.vector_size = vector_size
        self.window = window
        self.min_count = min_count
        self.epochs = epochs
        self.sg = sg
        self.pooling = pooling
        self.normalise = normalise
        self.seed = seed

    def _tokens(self, texts):
        preprocess = TextPreprocessor(normalise=self.normalise)
        return [preprocess(t) for t in texts]

    def fit(self, X, y=None):
        self.require()
        if self.pooling not in ("mean", "tfidf"):
            raise ValueError(f"word2vec: unknown pooling '{self.pooling}': use mean or tfidf")
        from gensim.models import Word2Vec

        from placedemarche.core.progress import task

        tokens = self._tokens(X)
        min_count = self.min_count if len(tokens) >= 20 else 1
        with task("word2vec: training", total=None):
            # workers=1 and a seed-independent hash make training reproducible.
            self.model_ = Word2Vec(sentences=tokens, vector_size=self.vector_size, window=self.window,
                                   min_count=min_count, epochs=self.epochs, sg=self.sg,
                                   seed=self.seed, workers=1, hashfxn=stable_hash)
        documents = len(tokens)
        df: dict[str, int] = {}
        for doc in tokens:
            for word in set(doc):
                df[word] = df.get(word, 0) + 1
        self.idf_ = {w: float(np.log((1 + documents) / (1 + n)) + 1.0) for w, n in df.items()}
        return self

    def transform(self, X):
        vectors = self.model_.wv
        out = np.zeros((len(X), self.vector_size), dtype=np.float32)
        for i, doc in enumerate(self._tokens(X)):
            known = [w for w in doc if w in vectors.key_to_index]
            if not known:
                continue
            weights = np.array([self.idf_.get(w, 1.0) if self.pooling == "tfidf" else 1.0 for w in known],
                               dtype=np.float32)
            out[i] = (vectors[known] * weights[:, None]).sum(0) / weights.sum()
        return out

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)


@hookimpl
def register_text_extractors(register):
    register(Word2VecExtractor)
