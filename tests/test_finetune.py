"""Keras fine-tuning: the backbone cut, augmented views, the two phases, saving the network.

Tiny on purpose: MobileNetV2 alpha=0.35 with random weights on 32 px images, 1-2 epochs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from placedemarche.data.catalog import load_catalog
from placedemarche.classify import TrainConfig, load_model, train
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.classify.finetune import BackboneSplit, FineTuneConfig, train_top
from placedemarche.core.plugins import create_plugin
from placedemarche.report.training import write_training_report

pytest.importorskip("tensorflow")

SPEC = "mobilenetv2:alpha=0.35,weights=None,input_size=32"


@pytest.fixture
def split():
    return BackboneSplit(create_plugin("image", SPEC), unfreeze=8)


def test_bottleneck_views_original_first_then_augmented(split, tiny_catalog):
    catalog = load_catalog(tiny_catalog)
    paths = catalog.image_paths[:5]
    B = split.bottleneck(paths, views=3, seed=0)
    assert B.shape == (3, 5, *split.bottleneck_shape) and B.dtype == np.float16
    again = split.bottleneck(paths, views=1)
    np.testing.assert_array_equal(B[0], again[0])  # view 0 is the image itself


def test_augmentation_changes_images_and_fills_with_white(tiny_catalog):
    from placedemarche.classify.finetune import augmentation_layers
    from placedemarche.data.images import load_image

    catalog = load_catalog(tiny_catalog)
    images = np.stack([load_image(p, 32) for p in catalog.image_paths[:6]]).astype(np.float32)
    augmented = np.asarray(augmentation_layers(seed=0)(images, training=True))
    assert augmented.shape == images.shape
    assert not np.allclose(augmented, images)
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0
    inference = np.asarray(augmentation_layers(seed=0)(images, training=False))
    np.testing.assert_allclose(inference, images)  # augmentation only in training


def test_top_starts_from_the_backbone_weights_and_both_phases_run(split, tiny_catalog):
    catalog = load_catalog(tiny_catalog)
    y = np.array([catalog.categories.index(c) for c in catalog.labels])
    B = split.bottleneck(catalog.image_paths, views=2, seed=1)
    config = FineTuneConfig(backbone=SPEC, unfreeze=8, epochs=2, finetune_epochs=1, patience=5,
                            validation_fraction=0.2)
    top, history = train_top(split, B, y, 3, config)
    assert [h["phase"] for h in history] == ["head", "head", "finetune"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history[0])
    # the copied top layers are the backbone's own before training
    fresh = split.build_top(3, 0.2, 0)
    original = {layer.name: layer for layer in split.top_layers}
    for layer in fresh.layers:
        if layer.name in original and layer.get_weights():
            for a, b in zip(layer.get_weights(), original[layer.name].get_weights()):
                np.testing.assert_array_equal(a, b)
    proba = top.predict(B[0].astype(np.float32), verbose=0)
    assert proba.shape == (18, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_finetuned_model_cross_validates_saves_and_reloads(tiny_catalog, tmp_path):
    catalog = load_catalog(tiny_catalog).validated()
    tuning = FineTuneConfig(backbone=SPEC, unfreeze=3, epochs=1, finetune_epochs=1, views=2, patience=1)
    out = tmp_path / "model"
    result = train(catalog, TrainConfig(image=SPEC, folds=2, finetune=tuning), out=out)
    write_training_report(result, out)
    assert set(result.summary["results"]) == {"image"}
    assert result.summary["features"]["image"]["views"] == 2
    for name in ("finetuned.keras", "learning_curves.png", "learning_curves.json", "model.json"):
        assert (out / name).is_file(), name
    curves = json.loads((out / "learning_curves.json").read_text())
    assert len(curves["folds"]) == 2 and curves["final"]
    before = result.predict_proba(catalog)
    loaded = load_model(out)
    np.testing.assert_allclose(loaded.predict_proba(catalog), before, rtol=1e-4, atol=1e-5)
    assert json.loads((out / "model.json").read_text())["extractors"]["image"]["fine_tuned"] is True


def test_cut_through_a_skip_connection_is_refused():
    with pytest.raises(PlaceDeMarcheError, match="skip connection"):
        BackboneSplit(create_plugin("image", SPEC), unfreeze=12)


def test_unfreezing_more_layers_than_the_network_has_is_refused():
    with pytest.raises(PlaceDeMarcheError, match="cannot unfreeze 1000"):
        BackboneSplit(create_plugin("image", SPEC), unfreeze=1000)


def test_fine_tuning_needs_a_keras_backbone(tiny_catalog):
    catalog = load_catalog(tiny_catalog).validated()
    tuning = FineTuneConfig(backbone="sift")
    with pytest.raises(PlaceDeMarcheError, match="not a Keras backbone"):
        train(catalog, TrainConfig(image="sift", folds=2, finetune=tuning))


def test_bad_fine_tuning_settings_are_refused(tiny_catalog):
    catalog = load_catalog(tiny_catalog).validated()
    with pytest.raises(PlaceDeMarcheError, match="needs an image backbone"):
        train(catalog, TrainConfig(text="tfidf", finetune=FineTuneConfig()))
    with pytest.raises(PlaceDeMarcheError, match="--views"):
        train(catalog, TrainConfig(image=SPEC, finetune=FineTuneConfig(views=0)))


@pytest.mark.slow
def test_real_mobilenetv2_weights_fine_tune(keras_home, tiny_catalog):
    """The small real MobileNetV2 (alpha 0.35, ImageNet) fine-tunes end to end and separates the
    generated categories (easy by construction: this checks the training loop, not its quality)."""
    weights = keras_home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    spec = f"mobilenetv2:alpha=0.35,weights={weights},input_size=96"
    catalog = load_catalog(tiny_catalog).validated()
    tuning = FineTuneConfig(backbone=spec, unfreeze=3, epochs=8, finetune_epochs=2, views=2,
                            validation_fraction=0.0, learning_rate=1e-2)
    result = train(catalog, TrainConfig(image=spec, folds=3, finetune=tuning))
    assert result.summary["results"]["image"]["accuracy_mean"] >= 0.8
