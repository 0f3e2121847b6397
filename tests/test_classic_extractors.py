"""bow, tfidf, word2vec and sift: shapes, determinism, learning from fit data only, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse

from placedemarche.core.catalog import load_catalog
from placedemarche.core.errors import ImageReadError
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


def test_word2vec_shapes_zero_rows_and_fit_only():
    ext = create_plugin("text", "word2vec:vector_size=16,epochs=5")
    X = ext.fit_transform(TRAIN)
    assert X.shape == (len(TRAIN), 16) and X.dtype == np.float32
    unseen = ext.transform(UNSEEN)
    assert np.all(unseen[1] == 0) and np.any(unseen[0] != 0)
    assert "zebra" not in ext.model_.wv.key_to_index and "zebra" not in ext.idf_


def test_word2vec_is_reproducible_across_processes():
    code = ("from placedemarche.core.plugins import create_plugin;"
            f"X = create_plugin('text', 'word2vec:vector_size=8,epochs=3').fit_transform({TRAIN!r});"
            "print(','.join(f'{v:.6f}' for v in X[0]))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}, check=True).stdout
            for seed in ("1", "2")}
    assert len(runs) == 1


def test_sift_features_and_determinism(tiny_catalog):
    paths = load_catalog(tiny_catalog).image_paths
    a = create_plugin("image", "sift:n_words=20,workers=2").fit_transform(paths)
    b = create_plugin("image", "sift:n_words=20,workers=1").fit_transform(paths)
    assert a.shape[0] == len(paths) and a.dtype == np.float32
    assert np.allclose(a, b)
    norms = np.linalg.norm(a, axis=1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)


def test_sift_blank_image_gives_zero_row_and_corrupt_image_is_named(tiny_catalog, tmp_path):
    import cv2

    paths = list(load_catalog(tiny_catalog).image_paths)
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((64, 64), 255, np.uint8))
    ext = create_plugin("image", "sift:n_words=10").fit(paths)
    assert not ext.transform([blank]).any()
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        ext.transform([paths[0], corrupt])


@pytest.mark.slow
def test_word2vec_on_flipkart_clusters_well_above_chance(flipkart_dir):
    from placedemarche.core.evaluate import EvaluationConfig, evaluate_combinations

    catalog = load_catalog(flipkart_dir)
    report = evaluate_combinations(catalog, text=["word2vec"],
                                   config=EvaluationConfig(seeds=(0,), cluster_on=("reduced",)))
    # chance is 0; published Word2Vec figures are 0.3-0.57 depending on the pipeline
    assert report.runs[0].mean("ari", "reduced") > 0.3
