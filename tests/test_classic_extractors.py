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
