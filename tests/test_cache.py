"""The content-addressed feature cache."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from placedemarche.core.cache import FeatureCache, extractor_key, fingerprint_images, fingerprint_texts
from placedemarche.core.features import extract_features
from placedemarche.core.plugins import create_plugin

TEXTS = ["steel analog watch", "cotton baby romper", "steel kitchen pan", "baby cotton towel"]


def test_second_extraction_comes_from_cache(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    ext = create_plugin("text", "tfidf:min_df=1")
    first = extract_features(ext, TEXTS, cache=cache)
    second = extract_features(create_plugin("text", "tfidf:min_df=1"), TEXTS, cache=cache)
    assert not first.from_cache and second.from_cache
    assert scipy.sparse.issparse(second.matrix)
    assert np.allclose(first.matrix.toarray(), second.matrix.toarray())
    assert cache.info().entries == 1


def test_key_changes_with_params_and_inputs():
    a = create_plugin("text", "tfidf")
    b = create_plugin("text", "tfidf:max_df=0.5")
    fp = fingerprint_texts(TEXTS)
    assert extractor_key(a, fp) != extractor_key(b, fp)
    assert extractor_key(a, fp) != extractor_key(a, fingerprint_texts(TEXTS[::-1]))
    assert extractor_key(a, fp) == extractor_key(create_plugin("text", "tfidf"), fp)


def test_image_fingerprint_follows_content_not_name(tmp_path):
    one, two = tmp_path / "a.jpg", tmp_path / "b.jpg"
    one.write_bytes(b"same bytes")
    two.write_bytes(b"same bytes")
    assert fingerprint_images([one]) == fingerprint_images([two])
    two.write_bytes(b"other bytes")
    assert fingerprint_images([one]) != fingerprint_images([two])


def test_dense_roundtrip_damaged_entry_and_clear(tmp_path):
    cache = FeatureCache(tmp_path)
    path = cache.save("ab" + "0" * 62, np.arange(6, dtype=np.float32).reshape(3, 2))
    assert np.array_equal(cache.load("ab" + "0" * 62), np.arange(6).reshape(3, 2))
    path.write_bytes(b"garbage")
    assert cache.load("ab" + "0" * 62) is None  # recomputed rather than crashing
    assert cache.clear().entries == 1
    assert cache.info().entries == 0


def test_key_changes_when_nltk_data_appears_or_disappears(monkeypatch):
    from placedemarche.core import text as textmod

    ext = create_plugin("text", "tfidf")
    fp = fingerprint_texts(TEXTS)
    with_data = extractor_key(ext, fp)
    monkeypatch.setattr(textmod, "resource_state", lambda language="english": {"wordnet": False})
    assert extractor_key(ext, fp) != with_data
