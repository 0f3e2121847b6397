"""The word2vec text extractor: shapes, pooling, learning from fit texts only, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from placedemarche.core.errors import CatalogError, PluginConfigError
from placedemarche.core.plugins import available_plugins, create_plugin
from placedemarche.core.progress import reporting

TEXTS = ["steel analog watch with leather strap", "analog wrist watch for men steel dial",
         "soft cotton baby romper for infants", "baby cotton towel soft and warm",
         "steel cooking pan for the kitchen", "kitchen bowl set steel dining"] * 4
SMALL = "word2vec:vector_size=12,epochs=4"


class RecordingReporter:
    def __init__(self):
        self.tasks: dict[int, list] = {}

    def start(self, description, total):
        self.tasks[len(self.tasks)] = [description, total, 0]
        return len(self.tasks) - 1

    def advance(self, handle, amount):
        self.tasks[handle][2] += amount

    def stop(self, handle):
        pass


def test_word2vec_is_listed_with_its_alias():
    assert "word2vec" in available_plugins("text")
    assert type(create_plugin("text", "w2v")).name == "word2vec"


@pytest.mark.parametrize("pooling", ["mean", "tfidf"])
def test_output_is_float32_one_row_per_text(pooling):
    X = create_plugin("text", f"{SMALL},pooling={pooling}").fit_transform(TEXTS)
    assert X.shape == (len(TEXTS), 12) and X.dtype == np.float32
    assert np.isfinite(X).all() and (np.abs(X).sum(axis=1) > 0).all()


def test_same_seed_same_vectors_other_seed_other_vectors():
    a = create_plugin("text", f"{SMALL},seed=3").fit_transform(TEXTS)
    b = create_plugin("text", f"{SMALL},seed=3").fit_transform(TEXTS)
    c = create_plugin("text", f"{SMALL},seed=4").fit_transform(TEXTS)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_pooling_tfidf_weights_words_by_idf_learned_in_fit():
    mean = create_plugin("text", f"{SMALL},pooling=mean").fit(TEXTS)
    tfidf = create_plugin("text", f"{SMALL},pooling=tfidf").fit(TEXTS)
    text = ["steel watch romper"]  # "steel" is in 4 of 6 texts, "romper" in 1: different IDFs
    wv = tfidf.model_.wv
    words = ["steel", "watch", "romper"]
    weights = np.array([tfidf.idf_[w] for w in words])
    expected = (weights[:, None] * wv[words]).sum(0) / weights.sum()
    assert np.allclose(tfidf.transform(text)[0], expected, atol=1e-6)
    assert np.allclose(mean.transform(text)[0], mean.model_.wv[words].mean(0), atol=1e-6)
    assert tfidf.idf_["romper"] > tfidf.idf_["steel"]


def test_learns_only_from_fit_texts_and_unknown_texts_give_zero_rows():
    ext = create_plugin("text", SMALL).fit(TEXTS)
    before = ext.model_.wv.vectors.copy()
    X = ext.transform(["a zebra xylophone", "", "leather watch strap plus zebra"])
    assert "zebra" not in ext.model_.wv.key_to_index and "zebra" not in ext.idf_
    assert np.array_equal(ext.model_.wv.vectors, before)  # transform does not train
    assert not X[0].any() and not X[1].any() and not np.isnan(X).any()
    assert X[2].any()
    # "zebra" is ignored: the row equals the one of the known words alone
    assert np.allclose(X[2], ext.transform(["leather watch strap"])[0])


def test_min_count_drops_rare_words_unless_it_would_drop_them_all():
    ext = create_plugin("text", f"{SMALL},min_count=2").fit(TEXTS + ["unique gizmo"])
    assert "steel" in ext.model_.wv.key_to_index and "gizmo" not in ext.model_.wv.key_to_index
    few = create_plugin("text", f"{SMALL},min_count=5").fit(["red towel", "blue watch"])
    assert {"red", "towel", "blue", "watch"} <= set(few.model_.wv.key_to_index)


def test_training_reports_one_progress_step_per_epoch():
    reporter = RecordingReporter()
    with reporting(reporter):
        create_plugin("text", "word2vec:vector_size=8,epochs=3").fit(TEXTS)
    assert ["word2vec: training", 3, 3] in reporter.tasks.values()


def test_bad_configuration_and_empty_corpus_give_one_line_errors():
    with pytest.raises(PluginConfigError, match="pooling 'max'"):
        create_plugin("text", "word2vec:pooling=max").fit(TEXTS)
    with pytest.raises(CatalogError, match="no word"):
        create_plugin("text", SMALL).fit(["", "the and of", "!!"])
    with pytest.raises(PluginConfigError, match="before transform"):
        create_plugin("text", SMALL).transform(TEXTS)


def test_works_in_a_scikit_learn_pipeline():
    from sklearn.base import clone
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline

    ext = create_plugin("text", SMALL)
    assert clone(ext).get_params() == ext.get_params()
    X = make_pipeline(ext, PCA(n_components=2)).fit_transform(TEXTS)
    assert X.shape == (len(TEXTS), 2)


@pytest.mark.slow
def test_flipkart_vectors_cluster_by_category(flipkart_dir):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    from sklearn.preprocessing import normalize

    from placedemarche.data.catalog import load_catalog

    catalog = load_catalog(flipkart_dir)
    # fewer epochs and dimensions than the defaults keep this under ~15 s on 2 cores
    X = create_plugin("text", "word2vec:vector_size=50,epochs=10").fit_transform(catalog.texts("both"))
    labels = KMeans(n_clusters=7, n_init=10, random_state=0).fit_predict(normalize(X))
    # chance gives ARI ~0; with the defaults we measured ~0.49 on the raw vectors, and the
    # published Word2Vec figures are 0.3-0.57. 0.25 leaves room for other seeds and BLAS builds
    # while still failing if the vectors carry no category signal.
    assert adjusted_rand_score(catalog.labels, labels) > 0.25


def test_fit_transform_equals_fit_then_transform_on_the_reference_tokens():
    from helpers import NLTK_DATA, reference_normalise

    if not NLTK_DATA.is_dir():
        pytest.skip("shared NLTK data not found")
    texts = TEXTS + ["Dr. Smith's \"analog\" watches.", "", "can't stop: steel-dial, 2 pack!"]
    ext = create_plugin("text", f"{SMALL},normalise=stem")
    assert ext._tokens(texts) == [reference_normalise(t, normalise="stem") for t in texts]
    X = ext.fit_transform(texts)
    assert np.array_equal(X, create_plugin("text", f"{SMALL},normalise=stem").fit(texts).transform(texts))
