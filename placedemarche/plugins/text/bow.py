"""The `bow` text extractor: bag-of-words counts over normalised tokens."""

from __future__ import annotations

from placedemarche import TextExtractor, hookimpl
from placedemarche.data.text import TextPreprocessor


class BagOfWordsExtractor(TextExtractor):
    """Word (n-gram) counts after tokenising, dropping stopwords and lemmatising.

    The vocabulary is learned from the texts given to ``fit`` only. Output is sparse.

    Args:
        normalise: "lemma" (WordNet), "stem" (Snowball) or "none".
        stopwords: language of the stopword list, or None to keep stopwords.
        ngram_range: (min_n, max_n) word n-grams.
        min_df: ignore terms in fewer documents than this (int) or fraction (float).
        max_df: ignore terms in more documents than this fraction.
        max_features: keep only the most frequent terms.
        binary: presence (1) instead of counts.

    Usage::

        X = BagOfWordsExtractor(min_df=2).fit_transform(["red cotton towel", "steel watch"])
    """

    name = "bow"
    aliases = ("bag-of-words", "count")
    description = "Bag-of-words counts (CountVectorizer) on lemmatised tokens"
    learns_from_data = True

    def __init__(self, normalise: str = "lemma", stopwords: str | None = "english",
                 ngram_range: tuple[int, int] = (1, 1), min_df: int | float = 2,
                 max_df: float = 0.95, max_features: int | None = None, binary: bool = False):
        self.normalise = normalise
        self.stopwords = stopwords
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features
        self.binary = binary

    def _vectorizer(self, min_df):
        from sklearn.feature_extraction.text import CountVectorizer

        return CountVectorizer(**self._vectorizer_params(min_df))

    def _vectorizer_params(self, min_df) -> dict:
        # The vectoriser is given token lists (``tokenizer=list`` copies them): normalising is
        # nearly all of the cost, and TextPreprocessor.many batches it and spreads it over the
        # CPUs, which a per-text tokenizer callback could not.
        return dict(
            tokenizer=list, lowercase=False, token_pattern=None, ngram_range=tuple(self.ngram_range),
            min_df=min_df, max_df=self.max_df, max_features=self.max_features, binary=self.binary,
        )

    def _tokens(self, X) -> list[list[str]]:
        preprocess = TextPreprocessor(stopwords=self.stopwords, normalise=self.normalise)
        return preprocess.many(X, f"{self.name}: tokenising")

    def fit(self, X, y=None):
        self.fit_transform(X)
        return self

    def transform(self, X):
        self._check_fitted("vectorizer_")
        if isinstance(self.vectorizer_.tokenizer, TextPreprocessor):  # fitted by an older version
            return self.vectorizer_.transform(list(X)).astype("float32")
        return self.vectorizer_.transform(self._tokens(X)).astype("float32")

    def fit_transform(self, X, y=None):
        # One pass over the texts: normalising is nearly all of the cost, and fit then
        # transform would do it twice.
        tokens = self._tokens(X)
        # A min_df meant for a full catalogue would empty the vocabulary of a handful of texts.
        min_df = self.min_df if not isinstance(self.min_df, int) or self.min_df <= len(tokens) else 1
        self.vectorizer_ = self._vectorizer(min_df)
        try:
            matrix = self.vectorizer_.fit_transform(tokens)
        except ValueError:  # every term pruned on a tiny corpus: keep them all rather than fail
            self.vectorizer_.set_params(min_df=1, max_df=1.0)
            matrix = self.vectorizer_.fit_transform(tokens)
        self.vocabulary_ = self.vectorizer_.vocabulary_
        return matrix.astype("float32")


@hookimpl
def register_text_extractors(register):
    register(BagOfWordsExtractor)
