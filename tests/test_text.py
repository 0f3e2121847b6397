"""Text normalisation with NLTK data, and its documented fallbacks without it."""

from __future__ import annotations

import importlib

import pytest

from placedemarche.core import text as textmod


@pytest.fixture
def fresh_text(monkeypatch):
    def load(nltk_data):
        import nltk

        monkeypatch.setattr(nltk.data, "path", [str(nltk_data)])
        for fn in (textmod._nltk_has, textmod.stopword_list, textmod._tokenizer, textmod._normaliser):
            fn.cache_clear()
        return textmod
    yield load
    for fn in (textmod._nltk_has, textmod.stopword_list, textmod._tokenizer, textmod._normaliser):
        fn.cache_clear()


def test_with_nltk_data_lemmatises_and_drops_stopwords(fresh_text):
    from conftest import NLTK_DATA

    if not NLTK_DATA.is_dir():
        pytest.skip("shared NLTK data not found")
    mod = fresh_text(NLTK_DATA)
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
