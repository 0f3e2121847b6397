"""Keras backbones: every architecture with weights=None, the two real offline weights,
weights errors, a missing optional dependency, and a corrupt image in a batch."""

from __future__ import annotations

import numpy as np
import pytest

from placedemarche.core.catalog import load_catalog
from placedemarche.core.errors import ImageReadError, MissingDependencyError
from placedemarche.core.plugins import create_plugin, get_plugin_class
from placedemarche.plugins.image.keras_cnn import BACKBONES, WeightsUnavailableError

pytest.importorskip("keras")

DIMS = {"vgg16": 512, "resnet50": 2048, "efficientnetb0": 1280, "nasnetmobile": 1056,
        "mobilenet": 1024, "mobilenetv2": 1280}


@pytest.fixture
def four_images(tiny_catalog):
    catalog = load_catalog(tiny_catalog)
    return [catalog.image_paths[i] for i in (0, 1, 6, 12)]


@pytest.mark.parametrize("name", sorted(DIMS))
def test_every_backbone_without_weights(name, four_images):
    ext = create_plugin("image", f"{name}:weights=None,input_size=64,batch_size=3")
    X = ext.fit_transform(four_images)
    assert X.shape == (4, DIMS[name]) and X.dtype == np.float32
    assert np.isfinite(X).all()
    again = ext.transform(four_images[::-1])  # batching and order do not change a row
    assert np.allclose(again[::-1], X, atol=1e-4)


def test_aliases_and_registration():
    assert {cls.name for cls in BACKBONES} == set(DIMS)
    assert get_plugin_class("image", "nasnet").name == "nasnetmobile"
    assert get_plugin_class("image", "efficientnet").name == "efficientnetb0"


def _nearest_neighbour_accuracy(X, labels):
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = X @ X.T
    np.fill_diagonal(sims, -np.inf)
    nearest = sims.argmax(1)
    return np.mean([labels[i] == labels[j] for i, j in enumerate(nearest)])


@pytest.mark.parametrize("spec,dims", [("mobilenet:alpha=0.75", 768), ("mobilenetv2:alpha=0.35", 1280)])
def test_real_imagenet_weights_offline(spec, dims, keras_home, tiny_catalog):
    catalog = load_catalog(tiny_catalog)
    ext = create_plugin("image", spec)
    X = ext.fit_transform(catalog.image_paths)
    assert X.shape == (len(catalog), dims)
    # pretrained features group the generated shapes: nearest neighbours share the category
    assert _nearest_neighbour_accuracy(X, catalog.labels) >= 0.8
    assert np.allclose(create_plugin("image", spec).fit_transform(catalog.image_paths[:3]), X[:3], atol=1e-4)


def test_missing_imagenet_weights_name_the_file(tmp_path, monkeypatch, four_images):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: offline")

    monkeypatch.setattr(file_utils, "get_file", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(WeightsUnavailableError,
                       match=r"vgg16: ImageNet weights not in the Keras cache .*vgg16_weights_tf_dim_ordering_tf_kernels_notop\.h5"):
        create_plugin("image", "vgg16").fit(four_images)


def test_missing_or_bad_local_weights_file(tmp_path, four_images):
    with pytest.raises(WeightsUnavailableError, match="weights file not found"):
        create_plugin("image", f"mobilenetv2:weights={tmp_path / 'nope.h5'}").fit(four_images)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(WeightsUnavailableError, match="cannot load weights"):
        create_plugin("image", f"mobilenetv2:weights={bad},alpha=0.35").fit(four_images)


def test_missing_optional_dependency(monkeypatch):
    cls = get_plugin_class("image", "vgg16")
    monkeypatch.setattr(cls, "requires", ("tensorflow_that_is_not_installed",))
    with pytest.raises(MissingDependencyError, match=r'pip install "placedemarche\[keras\]"'):
        create_plugin("image", "vgg16")


def test_corrupt_image_in_a_batch(tmp_path, four_images):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"garbage")
    ext = create_plugin("image", "mobilenetv2:weights=None,alpha=0.35,input_size=32,batch_size=2")
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        ext.fit_transform(four_images[:3] + [bad])
