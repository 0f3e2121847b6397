"""The `word2vec` text extractor: gensim Word2Vec trained on the catalogue, pooled per text."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np

from placedemarche import TextExtractor, hookimpl
from placedemarche.core.errors import CatalogError, PluginConfigError
from placedemarche.data.text import TextPreprocessor


def stable_hash(text: str) -> int:
    """Process-independent hash for gensim's vector initialisation (``hash()`` is salted
    by PYTHONHASHSEED, which would make the vectors differ from one run to the next)."""
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:4], "little")


class Word2VecExtractor(TextExtractor):
    """Word vectors learned from the texts given to ``fit``, averaged per text.

    The word vectors and the IDF weights come from the ``fit`` texts only; ``transform``
    ignores words it did not learn, and a text with no known word gets a zero vector.
    Training is single-threaded, seeded and independent of ``PYTHONHASHSEED``, so the same
    texts and parameters give the same vectors in every process.

    Args:
        vector_size: dimension of the word vectors.
        window: context window (words on each side).
        min_count: ignore words seen fewer times in the training texts (falls back to 1
            when no word is that frequent, e.g. on a handful of texts).
        epochs: training passes.
        sg: 1 for skip-gram, 0 for CBOW.
        pooling: "mean" (plain mean of the word vectors) or "tfidf" (each occurrence
            weighted by the word's IDF, so frequent words count as often as they occur
            but generic ones weigh less).
        normalise: "lemma", "stem" or "none" (see placedemarche.data.text).
        seed: random seed of the initial vectors and of negative sampling.

    Usage::

        X = Word2VecExtractor(vector_size=100, pooling="mean").fit_transform(texts)
    """

    name = "word2vec"
    aliases = ("w2v",)
    description = "Word2Vec (gensim) trained on the catalogue, mean or TF-IDF-weighted pooling"
    requires = ("gensim",)
    learns_from_data = True
    # The gensim model is kept after fit for inspection only: what transform needs (the word
    # vectors and their index) is in plain arrays, so a fitted extractor saves without pickle.
    transient = ("model_",)

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

    def _tokens(self, texts) -> list[list[str]]:
        return TextPreprocessor(normalise=self.normalise).many(texts, f"{self.name}: tokenising")

    def _check(self) -> None:
        self.require()
        if self.pooling not in ("mean", "tfidf"):
            raise PluginConfigError(f"word2vec: unknown pooling '{self.pooling}': use mean or tfidf")

    def fit(self, X, y=None):
        self._check()
        return self._fit_tokens(self._tokens(X))

    def _fit_tokens(self, tokens: list[list[str]]):
        from gensim.models import Word2Vec
        from gensim.models.callbacks import CallbackAny2Vec

        from placedemarche.core.progress import task

        counts = Counter(w for doc in tokens for w in doc)
        if not counts:
            raise CatalogError("word2vec: the texts given to fit contain no word to learn from "
                               "(all empty or stopwords); check the text field")
        min_count = self.min_count if max(counts.values()) >= self.min_count else 1

        with task("word2vec: training", total=self.epochs) as progress:
            class EpochProgress(CallbackAny2Vec):  # gensim calls it from this (the main) thread
                def on_epoch_end(self, model):
                    progress.advance(1)

            # workers=1 and a salt-free hash make training reproducible.
            self.model_ = Word2Vec(sentences=tokens, vector_size=self.vector_size, window=self.window,
                                   min_count=min_count, epochs=self.epochs, sg=self.sg,
                                   seed=self.seed, workers=1, hashfxn=stable_hash,
                                   callbacks=[EpochProgress()])
        self.model_.callbacks = ()  # the callback holds the finished progress task
        self.vectors_ = self.model_.wv.vectors
        self.vocabulary_ = dict(self.model_.wv.key_to_index)
        documents = len(tokens)
        df = Counter(w for doc in tokens for w in set(doc))
        self.idf_ = {w: float(np.log((1 + documents) / (1 + n)) + 1.0) for w, n in df.items()}
        return self

    def __setstate__(self, state: dict) -> None:
        model = state.pop("model_", None)  # pickled by an older version: the gensim model itself
        self.__dict__.update(state)
        if model is not None and "vectors_" not in state:
            self.vectors_, self.vocabulary_ = model.wv.vectors, dict(model.wv.key_to_index)

    def transform(self, X):
        self._check_fitted("vectors_")
        return self._pool(self._tokens(X))

    def _pool(self, tokens: list[list[str]]) -> np.ndarray:
        out = np.zeros((len(tokens), self.vector_size), dtype=np.float32)
        for i, doc in enumerate(tokens):
            rows = [self.vocabulary_[w] for w in doc if w in self.vocabulary_]
            if not rows:
                continue
            if self.pooling == "tfidf":
                weights = np.array([self.idf_[w] for w in doc if w in self.vocabulary_], dtype=np.float32)
            else:
                weights = np.ones(len(rows), dtype=np.float32)
            out[i] = weights @ self.vectors_[rows] / weights.sum()
        return out

    def fit_transform(self, X, y=None):
        self._check()
        tokens = self._tokens(X)  # normalised once, for training and for pooling
        return self._fit_tokens(tokens)._pool(tokens)


@hookimpl
def register_text_extractors(register):
    register(Word2VecExtractor)
