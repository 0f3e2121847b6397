"""Text normalisation with NLTK data, and its documented fallbacks without it; the cached,
batched normalisation gives exactly the tokens of the original one-text-at-a-time code."""

from __future__ import annotations

import contextlib
import pickle
import random

import pytest

from placedemarche.data import text as textmod

from helpers import FLIPKART, NLTK_DATA, reference_filter, reference_normalise, reference_word_tokens


@pytest.fixture
def fresh_text(monkeypatch):
    def load(nltk_data):
        import nltk

        monkeypatch.setattr(nltk.data, "path", [str(nltk_data)])
        textmod.clear_caches()
        return textmod
    yield load
    textmod.clear_caches()


@pytest.fixture
def nltk_data():
    if not NLTK_DATA.is_dir():
        pytest.skip("shared NLTK data not found")
    return NLTK_DATA


def test_with_nltk_data_lemmatises_and_drops_stopwords(fresh_text, nltk_data):
    mod = fresh_text(nltk_data)
    tokens = mod.TextPreprocessor()("The babies' Cotton Curtains, pack of 2 for the kids")
    assert tokens == ["baby", "cotton", "curtain", "pack", "kid"]
    assert mod.TextPreprocessor(normalise="stem")("running curtains")[:2] == ["run", "curtain"]


def test_without_nltk_data_falls_back_with_one_warning_each(fresh_text, tmp_path):
    mod = fresh_text(tmp_path / "empty")
    with pytest.warns(mod.TextResourceWarning) as caught:
        tokens = mod.TextPreprocessor()("The Cotton curtains and the towels")
    assert tokens == ["cotton", "curtains", "towels"]  # built-in stopwords, no lemmatiser
    messages = [str(w.message) for w in caught]
    assert any("punkt_tab" in m for m in messages)
    assert any("stopwords" in m for m in messages)
    assert all("\n" not in m for m in messages)


def test_numbers_and_short_tokens_dropped(fresh_text, tmp_path):
    mod = fresh_text(tmp_path / "empty")
    with pytest.warns(mod.TextResourceWarning):
        assert mod.TextPreprocessor(normalise="none")("Rs. 899 x 2 pack") == ["rs", "pack"]
        assert mod.TextPreprocessor(normalise="none", keep_numbers=True)("Rs 899") == ["rs", "899"]
        assert mod.TextPreprocessor().many(["Rs 899 towels", ""]) == [["rs", "towels"], []]


PARAMS = [dict(), dict(normalise="stem"), dict(normalise="none", stopwords=None),
          dict(keep_numbers=True, min_length=1), dict(normalise="stem", stopwords=None, min_length=4)]

EDGE_CASES = [
    "", " ", "\n\n", "...", "!!", "'", '"', "''", "``", "a", "I.", "\x1cword\x1d x", "\ue000 \ue001 private use",
    '"Quoted start" and "end."', "'tis 'twas can't won't gonna wanna gimme lemme d'ye more'n",
    "Cotton (pack of 2).", "Price: Rs. 899, 3,36 1.5kg 10:30 50% #1 @home a&b c++ t-shirt -- e-mail",
    "Visit http://www.example.com/a?b=c&d=e or www.shop.in.", "Ends with a quote.' Then \"more\".\"",
    "naïve café «x» “y” ‘z’ „w“ — – ― ‒ … ?! Dr. Smith's U.S.A. e.g. i.e. No. 5",
    "word.)", "word.) ]", "(Sent1.) Sent2.", "trailing spaces.   ", "   leading spaces", "tab\tsep\rcr\nnl",
    "nbsp\u00a0sep\u2028line\u3000ideo", "Mixed  double   spaces ,, ;; :: x:y a,b", "end,", "end:", "x'",
]


def adversarial_texts(n: int, seed: int = 0) -> list[str]:
    """Random strings over the characters and words NLTK's tokeniser has rules for."""
    rng = random.Random(seed)
    words = ["can", "not", "cannot", "gonna", "wanna", "'tis", "don't", "it's", "we're", "o'clock",
             "baby", "rs", "mr", "e.g", "a", "i", "1.5", "3,36", "10:30", "50%", "#1", "t-shirt", "--",
             "...", "''", "``", "'", '"', "d'ye", "more'n", "http://a.b/c?d", "«x»", "“q”", "‘s’",
             "naïve", "(x)", "[y]", "{z}", "<w>", "—", "?", "!", ":", ";", ",", ".", "'s", "n't", "'LL"]
    pre = ["", "", "", '"', "'", "(", "[", "``", "''", "“", "«", "`", "-", "*"]
    suf = ["", "", "", ".", ",", ":", ";", '"', "'", ")", ".)", '."', "'.", "!", "?", "...", "'s",
           "”", "’", "»", ").", "''", "--", ".."]
    spaces = [" "] * 20 + ["  ", "\n", "\t", "\u00a0", "\r\n", " \n ", "\x1e"]
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 20)):
            word = rng.choice(pre) + rng.choice(words) + rng.choice(suf)
            parts += [word.upper() if rng.random() < 0.1 else word, rng.choice(spaces)]
        texts.append("".join(parts).rstrip() if rng.random() < 0.7 else "".join(parts))
    return texts


@pytest.fixture(scope="module")
def flipkart_sample():
    if not NLTK_DATA.is_dir() or not (FLIPKART / "flipkart_com-ecommerce_sample_1050.csv").is_file():
        pytest.skip("shared Flipkart sample or NLTK data not found")
    from placedemarche.data.catalog import load_catalog

    texts = load_catalog(FLIPKART).texts("both")[::4]
    return texts, [reference_word_tokens(t) for t in texts]


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "defaults")
def test_flipkart_texts_normalise_exactly_as_the_reference(fresh_text, nltk_data, flipkart_sample, params):
    mod = fresh_text(nltk_data)
    texts, words = flipkart_sample
    expected = [reference_filter(w, **params) for w in words]
    preprocess = mod.TextPreprocessor(**params)
    assert preprocess.many(texts) == expected
    assert [preprocess(t) for t in texts[:40]] == expected[:40]  # one text at a time, caches warm


@pytest.mark.parametrize("params", [dict(lowercase=False), dict(language="french", stopwords="french", normalise="stem"),
                                    dict(language="french", stopwords="french", normalise="lemma")])
def test_case_and_french_normalise_exactly_as_the_reference(fresh_text, nltk_data, flipkart_sample, params):
    mod = fresh_text(nltk_data)
    texts = flipkart_sample[0][:60] + EDGE_CASES
    no_wordnet = params["normalise"] == "lemma" if "language" in params else False
    with pytest.warns(mod.TextResourceWarning) if no_wordnet else contextlib.nullcontext():
        got = mod.TextPreprocessor(**params).many(texts)
    assert got == [reference_normalise(t, **params) for t in texts]


def test_adversarial_texts_tokenise_exactly_as_nltk(fresh_text, nltk_data):
    """The strictest check: every raw NLTK token (not only those normalisation keeps) comes
    back, in order, except the sentence-final periods the chunk cache leaves to normalisation
    to drop."""
    mod = fresh_text(nltk_data)
    texts = EDGE_CASES + adversarial_texts(600)
    for lowercase in (True, False):
        pipeline = mod._CachedPipeline(lowercase, None, "none", 0, True, "english")
        pipeline._token = lambda token: None if token == "." else token
        expected = [[w for w in reference_word_tokens(t, lowercase) if w != "."] for t in texts]
        assert pipeline.many(texts) == expected
    assert mod.TextPreprocessor().many(texts[:200]) == [reference_normalise(t) for t in texts[:200]]


def test_bounded_caches_give_the_same_tokens(fresh_text, nltk_data, flipkart_sample, monkeypatch):
    mod = fresh_text(nltk_data)
    monkeypatch.setattr(mod, "CACHE_SIZE", 50)
    monkeypatch.setattr(mod, "_BATCH", 7)
    texts, words = flipkart_sample
    assert mod.TextPreprocessor(normalise="stem").many(texts[:60]) == [
        reference_filter(w, normalise="stem") for w in words[:60]]
    pipeline = mod._pipeline(mod.TextPreprocessor(normalise="stem")._key())
    assert len(pipeline.tokens) <= 50


def test_worker_processes_give_the_same_tokens_in_order(fresh_text, nltk_data, flipkart_sample, monkeypatch):
    mod = fresh_text(nltk_data)
    monkeypatch.setattr(mod, "_BATCH", 20)
    texts, words = flipkart_sample
    got = mod.TextPreprocessor(normalise="stem").many(texts[:80], n_jobs=2)
    assert got == [reference_filter(w, normalise="stem") for w in words[:80]]


def test_a_preprocessor_pickles_without_its_caches(fresh_text, nltk_data):
    mod = fresh_text(nltk_data)
    preprocess = mod.TextPreprocessor()
    before = preprocess.many(EDGE_CASES)
    data = pickle.dumps(preprocess)
    assert b"_CachedPipeline" not in data and len(data) < 500
    mod.clear_caches()  # as in a fresh worker process: rebuilt on first use
    assert pickle.loads(data).many(EDGE_CASES) == before
