"""The `tfidf` text extractor: TF-IDF weighted words, L2-normalised rows."""

from __future__ import annotations

from placedemarche import hookimpl
from placedemarche.plugins.text.bow import BagOfWordsExtractor


class TfidfExtractor(BagOfWordsExtractor):
    """TF-IDF over normalised tokens; rows are L2-normalised, output is sparse.

    Do not standard-scale this matrix before PCA/t-SNE (it destroys the clustering);
    the evaluator reduces sparse input with a truncated SVD instead.

    Args:
        sublinear_tf: use 1 + log(tf) instead of raw counts.
        (the other arguments are those of `bow`)

    Usage::

        X = TfidfExtractor(ngram_range=(1, 2)).fit_transform(texts)
    """

    name = "tfidf"
    aliases = ("tf-idf",)
    description = "TF-IDF (TfidfVectorizer) on lemmatised tokens, L2-normalised"

    def __init__(self, normalise: str = "lemma", stopwords: str | None = "english",
                 ngram_range: tuple[int, int] = (1, 1), min_df: int | float = 2,
                 max_df: float = 0.95, max_features: int | None = None, binary: bool = False,
                 sublinear_tf: bool = True):
        super().__init__(normalise=normalise, stopwords=stopwords, ngram_range=ngram_range,
                         min_df=min_df, max_df=max_df, max_features=max_features, binary=binary)
        self.sublinear_tf = sublinear_tf

    def _vectorizer(self, min_df):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(sublinear_tf=self.sublinear_tf, **self._vectorizer_params(min_df))


@hookimpl
def register_text_extractors(register):
    register(TfidfExtractor)
