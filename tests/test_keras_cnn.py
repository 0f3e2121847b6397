"""Keras backbones: every architecture with weights=None, the two real offline weights,
weights errors, a missing optional dependency, and a corrupt image in a batch."""

from __future__ import annotations

import numpy as np
import pytest

from placedemarche.data.catalog import load_catalog
from placedemarche.core.errors import ImageReadError, MissingDependencyError, PlaceDeMarcheError
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


@pytest.mark.slow
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


def test_preprocess_is_the_architectures_own():
    red = np.zeros((1, 2, 2, 3), np.float32)
    red[..., 0] = 255.0
    before = red.copy()
    # caffe style (VGG16, ResNet50): RGB -> BGR, minus the ImageNet channel means
    assert np.allclose(create_plugin("image", "vgg16").preprocess(red)[0, 0, 0],
                       [-103.939, -116.779, 255 - 123.68])
    assert np.allclose(create_plugin("image", "resnet50").preprocess(red)[0, 0, 0],
                       [-103.939, -116.779, 255 - 123.68])
    # tf style (MobileNets, NASNet): scaled to [-1, 1]
    for name in ("mobilenet", "mobilenetv2", "nasnetmobile"):
        assert np.allclose(create_plugin("image", name).preprocess(red)[0, 0, 0], [1, -1, -1])
    # EfficientNet normalises inside the network: 0..255 goes in unchanged
    assert np.allclose(create_plugin("image", "efficientnetb0").preprocess(red), red)
    assert np.array_equal(red, before)  # the caller's batch is never modified


def test_image_size_and_imagenet_weight_file_names():
    assert create_plugin("image", "vgg16").image_size() == 224
    assert create_plugin("image", "resnet50:input_size=160").image_size() == 160
    mobilenet = create_plugin("image", "mobilenet:alpha=0.75")
    assert mobilenet.expected_weights_file() == "mobilenet_7_5_224_tf_no_top.h5"
    # no ImageNet file at this size: Keras loads the 224 one
    assert create_plugin("image", "mobilenet:alpha=0.75,input_size=100").expected_weights_file() \
        == "mobilenet_7_5_224_tf_no_top.h5"
    assert create_plugin("image", "mobilenetv2:alpha=0.35").expected_weights_file() \
        == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    assert create_plugin("image", "mobilenetv2:input_size=160").expected_weights_file() \
        == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5"


def test_configurations_without_imagenet_weights_say_so():
    with pytest.raises(PlaceDeMarcheError, match=r"no ImageNet weights for alpha=0.6: use one of 0.25, 0.5"):
        create_plugin("image", "mobilenet:alpha=0.6").fit([])
    with pytest.raises(PlaceDeMarcheError, match="nasnetmobile: ImageNet weights need input_size=224, got 128"):
        create_plugin("image", "nasnet:input_size=128").fit([])
    with pytest.raises(PlaceDeMarcheError, match="input_size must be at least 32, got 16"):
        create_plugin("image", "vgg16:weights=None,input_size=16").fit([])


@pytest.mark.slow
def test_real_weights_at_another_input_size(keras_home, tiny_catalog):
    # 128 has its own ImageNet file, absent from the shared cache; 100 falls back to the 224 file
    paths = load_catalog(tiny_catalog).image_paths[:2]
    X = create_plugin("image", "mobilenet:alpha=0.75,input_size=100").fit_transform(paths)
    assert X.shape == (2, 768) and np.isfinite(X).all()


def test_unwritable_keras_home_is_harmless(tmp_path):
    import os
    import subprocess
    import sys

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = ("from placedemarche.core.plugins import create_plugin;"
            "m = create_plugin('image', 'mobilenetv2:weights=None,alpha=0.35,input_size=32').load_base();"
            "print(m.output_shape)")
    # Keras wants to create KERAS_HOME and write keras.json there at import: both fail here
    env = {**os.environ, "KERAS_HOME": str(blocker / "keras")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(None, 1280)" in done.stdout


def _row_cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.slow
def test_openvino_backend_matches_keras_and_reuses_its_export(keras_home, tiny_catalog, monkeypatch, tmp_path):
    pytest.importorskip("openvino")
    from placedemarche.features import inference

    monkeypatch.setenv("PM_MODEL_CACHE", str(tmp_path))
    paths = load_catalog(tiny_catalog).image_paths[:3]  # generated shapes, real ImageNet weights
    reference = create_plugin("image", "mobilenet:alpha=0.75").fit_transform(paths)
    X = create_plugin("image", "mobilenet:alpha=0.75,backend='openvino'").fit_transform(paths)
    assert X.shape == reference.shape == (3, 768)
    # the same fp32 network run by another runtime: equal up to float rounding
    assert _row_cosines(X, reference).min() >= 0.9999
    exported = list((tmp_path / "exports").glob("mobilenet-openvino-fp32-*.ovir"))
    assert len(exported) == 1 and exported[0].with_suffix(".json").is_file()

    def no_conversion(model):
        raise AssertionError("converted again instead of reading the model cache")

    # (a corrupt export is rebuilt by the same cache as the torch exports: tests/test_backends.py)
    monkeypatch.setattr(inference, "openvino_ir_bytes", no_conversion)
    again = create_plugin("image", "mobilenet:alpha=0.75,backend='openvino'").fit_transform(paths[::-1])
    assert np.allclose(again[::-1], X, atol=1e-5)


def test_openvino_backend_with_random_weights_and_its_errors(monkeypatch, four_images):
    import sys

    pytest.importorskip("openvino")
    spec = "mobilenetv2:weights=None,alpha=0.35,input_size=64"
    ext = create_plugin("image", spec + ",backend='openvino'")
    X = ext.fit_transform(four_images)
    # random weights are never cached: the converted network is the very model Keras runs
    assert _row_cosines(X, np.asarray(ext.model_.predict_on_batch(
        ext.preprocess(_decoded(four_images, 64))), dtype=np.float32)).min() >= 0.9999
    assert ext.runtime_params()["backend"] == "openvino" and "versions" in ext.runtime_params()
    assert create_plugin("image", spec).runtime_params() == {"backend": "keras"}
    with pytest.raises(PlaceDeMarcheError, match="unknown backend 'onnx': use keras or openvino"):
        create_plugin("image", spec + ",backend='onnx'").fit(four_images)
    monkeypatch.setitem(sys.modules, "openvino", None)
    one_line = r"""^mobilenetv2: backend 'openvino' needs openvino: pip install "placedemarche\[openvino\]"$"""
    with pytest.raises(MissingDependencyError, match=one_line):
        create_plugin("image", spec + ",backend='openvino'").fit(four_images)


def _decoded(paths, size):
    from placedemarche.data.images import iter_image_batches

    return np.concatenate(list(iter_image_batches(paths, size, 8, 1)))
