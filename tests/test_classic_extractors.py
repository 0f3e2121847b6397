"""bow and tfidf (fit-only vocabulary, unit rows), plugin registration, and word2vec
reproducibility across processes; word2vec and sift have their own test files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse

from placedemarche.core.plugins import available_plugins, create_plugin

TRAIN = ["steel analog watch with leather strap", "analog wrist watch for men steel dial",
         "soft cotton baby romper for infants", "baby cotton towel soft and warm",
         "steel cooking pan for the kitchen", "kitchen bowl set steel dining"] * 4
UNSEEN = ["leather watch strap", "a zebra xylophone"]


def test_classic_plugins_registered():
    assert {"bow", "tfidf", "word2vec"} <= set(available_plugins("text"))
    assert "sift" in available_plugins("image")


@pytest.mark.parametrize("spec", ["bow", "tfidf"])
def test_vectorisers_learn_vocabulary_from_fit_only(spec):
    ext = create_plugin("text", spec).fit(TRAIN)
    assert "zebra" not in ext.vocabulary_
    X = ext.transform(UNSEEN)
    assert scipy.sparse.issparse(X) and X.shape == (2, len(ext.vocabulary_))
    assert X[1].nnz == 0 and X[0].nnz > 0


def test_tfidf_rows_are_unit_length():
    X = create_plugin("text", "tfidf").fit_transform(TRAIN)
    assert np.allclose(scipy.sparse.linalg.norm(X, axis=1), 1.0, atol=1e-5)


def test_word2vec_is_reproducible_across_processes():
    code = ("from placedemarche.core.plugins import create_plugin;"
            f"X = create_plugin('text', 'word2vec:vector_size=8,epochs=3').fit_transform({TRAIN!r});"
            "print(','.join(f'{v:.6f}' for v in X[0]))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}, check=True).stdout
            for seed in ("1", "2")}
    assert len(runs) == 1


@pytest.fixture(scope="module")
def flipkart_texts():
    from helpers import FLIPKART, NLTK_DATA

    if not NLTK_DATA.is_dir() or not (FLIPKART / "flipkart_com-ecommerce_sample_1050.csv").is_file():
        pytest.skip("shared Flipkart sample or NLTK data not found")
    from placedemarche.data.catalog import load_catalog

    return load_catalog(FLIPKART).texts("both")[::5]


@pytest.mark.parametrize("spec, reference_class, options", [
    ("tfidf", "TfidfVectorizer", dict(sublinear_tf=True)),
    ("tfidf:ngram_range=[1,2],normalise=stem,sublinear_tf=False", "TfidfVectorizer",
     dict(ngram_range=(1, 2), sublinear_tf=False)),
    ("bow:binary=True,stopwords=None,max_features=300", "CountVectorizer",
     dict(binary=True, max_features=300)),
])
def test_vectorisers_give_the_matrices_of_the_reference_tokeniser(flipkart_texts, spec, reference_class, options):
    """The same vocabulary and values as a scikit-learn vectoriser calling the original
    one-text-at-a-time normalisation (tests/test_text.py) for each text."""
    import sklearn.feature_extraction.text as sktext
    from helpers import reference_normalise

    train, unseen = flipkart_texts[:150], flipkart_texts[150:] + ["", "a zebra xylophone"]
    ext = create_plugin("text", spec)
    params = dict(stopwords=ext.stopwords, normalise=ext.normalise)
    reference = getattr(sktext, reference_class)(
        tokenizer=lambda text: reference_normalise(text, **params), lowercase=False, token_pattern=None,
        min_df=ext.min_df, max_df=ext.max_df, **options)
    X = ext.fit_transform(train)
    assert ext.vocabulary_ == reference.fit(train).vocabulary_
    assert (X != reference.transform(train).astype("float32")).nnz == 0
    assert (ext.transform(unseen) != reference.transform(unseen).astype("float32")).nnz == 0


def test_fit_transform_normalises_each_text_once(monkeypatch):
    from placedemarche.data.text import TextPreprocessor

    seen = []
    many = TextPreprocessor.many
    monkeypatch.setattr(TextPreprocessor, "many", lambda self, texts, *a, **k: seen.append(len(texts)) or
                        many(self, texts, *a, **k))
    create_plugin("text", "tfidf").fit_transform(TRAIN)
    create_plugin("text", "word2vec:vector_size=8,epochs=1").fit_transform(TRAIN)
    assert seen == [len(TRAIN), len(TRAIN)]


def test_fitted_vectoriser_pickles_small_and_transforms_the_same():
    import pickle

    from placedemarche.data.text import clear_caches

    ext = create_plugin("text", "tfidf").fit(TRAIN)
    data = pickle.dumps(ext)
    assert b"_CachedPipeline" not in data
    clear_caches()  # a Ray actor unpickles it in a process with no cache yet
    assert (pickle.loads(data).transform(UNSEEN) != ext.transform(UNSEEN)).nnz == 0
