"""The supervised classifier: cross-validation, fold-only fitting, model directory, pm train/predict."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from placedemarche import ImageExtractor, TextExtractor, hookimpl
from placedemarche.cli.main import cli
from placedemarche.core import plugins
from placedemarche.features.cache import FeatureCache
from placedemarche.data.catalog import load_catalog
from placedemarche.classify import (ModelError, TrainConfig, load_model, predict_catalog, train)
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.report.training import write_training_report


class MeanColour(ImageExtractor):
    name = "mean-colour"
    description = "Mean and spread of the BGR colours of an image (test plugin)"

    def transform(self, X):
        import cv2

        out = []
        for p in X:
            pixels = cv2.imread(str(p)).reshape(-1, 3).astype(np.float32)
            out.append(np.concatenate([pixels.mean(0), pixels.std(0)]))
        return np.array(out, dtype=np.float32)


class GreyHistogram(ImageExtractor):
    name = "grey-histogram"
    description = "8-bin histogram of grey levels (test plugin)"

    def transform(self, X):
        import cv2

        out = [np.histogram(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), bins=8, range=(0, 256))[0] for p in X]
        return np.array(out, dtype=np.float32)


class RecordingVocabulary(TextExtractor):
    """A learning extractor that records every text it was fitted on (class-level log)."""

    name = "recording-vocab"
    description = "Bag of words that logs what fit() saw (test plugin)"
    learns_from_data = True
    fitted_on: list[list[str]] = []

    def fit(self, X, y=None):
        RecordingVocabulary.fitted_on.append(list(X))
        words = sorted({w for text in X for w in text.lower().split()})
        self.vocabulary_ = {w: i for i, w in enumerate(words)}
        return self

    def transform(self, X):
        out = np.zeros((len(X), len(self.vocabulary_)), dtype=np.float32)
        for row, text in enumerate(X):
            for w in text.lower().split():
                if w in self.vocabulary_:
                    out[row, self.vocabulary_[w]] += 1
        return out


class _Plugin:
    @staticmethod
    @hookimpl
    def register_image_extractors(register):
        register(MeanColour)
        register(GreyHistogram)

    @staticmethod
    @hookimpl
    def register_text_extractors(register):
        register(RecordingVocabulary)


@pytest.fixture
def classify_plugins():
    name = plugins.register_plugin(_Plugin, name="classify-test-plugins", provider="tests")
    RecordingVocabulary.fitted_on = []
    yield
    plugins.unregister_plugin(name)


def _csv_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_cross_validation_scores_every_modality_and_writes_the_report(tiny_catalog, tmp_path, classify_plugins):
    catalog = load_catalog(tiny_catalog).validated()
    out = tmp_path / "model"
    result = train(catalog, TrainConfig(text="tfidf:min_df=1", image="mean-colour", folds=3),
                   cache=FeatureCache(tmp_path / "c"), out=out)
    write_training_report(result, out)
    assert set(result.summary["results"]) == {"text", "image", "text+image"}
    assert len(result.folds) == 3
    assert sum(f["test"] for f in result.folds) == len(catalog)
    fused = result.summary["results"]["text+image"]
    # plumbing, not quality: the generated texts and colours separate the three categories by
    # construction (conftest); accuracy on real products is checked on Flipkart (test_flipkart_quality)
    assert fused["accuracy_mean"] >= 0.9
    assert np.array(fused["confusion_matrix"]).sum() == len(catalog)
    for name in ("metrics.json", "folds.csv", "classification_report.txt", "confusion_matrix.csv",
                 "confusion_matrix.png", "model.json", "model.joblib"):
        assert (out / name).is_file(), name
    folds = _csv_rows(out / "folds.csv")
    assert [r["fold"] for r in folds] == ["1", "2", "3"]
    assert float(folds[0]["text+image:accuracy"]) == result.folds[0]["text+image:accuracy"]
    confusion = _csv_rows(out / "confusion_matrix.csv")
    assert [r["true \\ predicted"] for r in confusion] == catalog.categories
    report = (out / "classification_report.txt").read_text()
    assert "Baby Care" in report and "macro avg" in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mean"]["accuracy"] == fused["accuracy_mean"]


def test_learning_extractors_are_fitted_on_training_folds_only(tiny_catalog, tmp_path, classify_plugins):
    catalog = load_catalog(tiny_catalog).validated()
    train(catalog, TrainConfig(text="recording-vocab", folds=3, text_field="name"))
    fits = RecordingVocabulary.fitted_on
    assert len(fits) == 4  # one per fold, then the final fit on everything
    names = catalog.texts("name")
    for fold_texts in fits[:3]:
        assert len(fold_texts) == 12  # 2/3 of 18 products: the test fold is never seen
    seen_by_folds = [set(t) for t in fits[:3]]
    for name in names:  # each product is held out by exactly one fold
        assert sum(name not in seen for seen in seen_by_folds) == 1
    assert sorted(fits[3]) == sorted(names)


def test_frozen_features_come_from_the_cache(tiny_catalog, tmp_path, classify_plugins):
    catalog = load_catalog(tiny_catalog).validated()
    cache = FeatureCache(tmp_path / "c")
    first = train(catalog, TrainConfig(image="mean-colour", folds=2), cache=cache)
    second = train(catalog, TrainConfig(image="mean-colour", folds=2), cache=cache)
    assert first.summary["features"]["image"]["cached"] is False
    assert second.summary["features"]["image"]["cached"] is True
    assert first.folds[0]["image:accuracy"] == second.folds[0]["image:accuracy"]


def test_api_predict_and_predict_proba(tiny_catalog, classify_plugins):
    catalog = load_catalog(tiny_catalog).validated()
    result = train(catalog, TrainConfig(text="tfidf:min_df=1", folds=0))
    assert result.folds == [] and result.summary["results"] == {}
    proba = result.predict_proba(["analog watch dial strap", "baby infant romper cotton"])
    assert proba.shape == (2, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert result.predict(["analog watch dial strap", "baby infant romper cotton"]) == ["Watches", "Baby Care"]
    assert result.model.label_encoder.inverse_transform([0]).tolist() == ["Baby Care"]


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_missing_modality_is_predicted_from_the_other_or_reported(tiny_catalog, tmp_path, classify_plugins):
    catalog = load_catalog(tiny_catalog).validated()
    model = train(catalog, TrainConfig(text="tfidf:min_df=1", image="mean-colour", folds=0)).model
    rows = _csv_rows(tiny_catalog)
    new = [dict(rows[0]), dict(rows[7]), dict(rows[13]), dict(rows[14])]
    new[1]["image"] = "does-not-exist.jpg"  # Kitchen, text only
    new[2]["product_name"] = new[2]["description"] = ""  # Baby Care, image only
    new[3].update(product_name="", description="", image="")  # nothing usable
    path = tiny_catalog.parent / "new.csv"
    _write_csv(path, new)
    result = predict_catalog(model, load_catalog(path), top_k=2, out=tmp_path / "pred.csv")
    written = _csv_rows(tmp_path / "pred.csv")
    assert [r["id"] for r in written] == [r["uniq_id"] for r in new]  # nothing dropped
    assert [r["modality"] for r in written] == ["text+image", "text", "image", "none"]
    assert written[0]["category"] == new[0]["category"]
    assert written[1]["category"] == "Kitchen"
    missing = tiny_catalog.parent / "images" / "does-not-exist.jpg"
    assert written[1]["note"] == f"image file not found: {missing}; predicted from text"
    assert written[2]["category"] == "Baby Care"
    assert written[2]["note"] == "no usable text; predicted from image"
    assert written[3]["category"] == ""
    assert written[3]["note"] == "no usable text; no image given; nothing to predict from"
    assert written[0]["note"] == ""
    assert float(written[0]["probability"]) >= float(written[0]["probability_2"])
    assert result.counts == {"text+image": 1, "text": 1, "image": 1, "none": 1}


def test_mean_fusion(tiny_catalog, classify_plugins):
    catalog = load_catalog(tiny_catalog).validated()
    result = train(catalog, TrainConfig(text="tfidf:min_df=1", image="mean-colour", fusion="mean", folds=2))
    assert result.model.fusion_heads == {}
    P = result.predict_proba(catalog)
    blocks = result.model.blocks
    expected = (blocks["text"].head.predict_proba(blocks["text"].features(catalog.texts(), None))
                + blocks["image"].head.predict_proba(blocks["image"].features(catalog.image_paths, None))) / 2
    np.testing.assert_allclose(P, expected)


def _block_proba(model, key, catalog):
    block = model.blocks[key]
    items = catalog.texts() if block.kind == "text" else catalog.image_paths
    return block.head.predict_proba(block.features(items, None))


def test_several_extractors_per_modality_mean(tiny_catalog, tmp_path, classify_plugins):
    catalog = load_catalog(tiny_catalog).validated()
    config = TrainConfig(text=["tfidf:min_df=1", "recording-vocab"], image=["mean-colour", "grey-histogram"],
                         fusion="mean", folds=3)
    result = train(catalog, config, out=tmp_path / "m")
    model = result.model
    keys = ["text:tfidf:min_df=1", "text:recording-vocab", "image:mean-colour", "image:grey-histogram"]
    assert list(model.blocks) == keys
    assert set(result.summary["results"]) == {*keys, "text", "image", "text+image"}
    assert len(RecordingVocabulary.fitted_on) == 4  # the learning extractor, fitted in each fold then on all
    assert all(len(texts) == 12 for texts in RecordingVocabulary.fitted_on[:3])
    assert model.fusion_heads == {}
    each = {key: _block_proba(model, key, catalog) for key in keys}
    np.testing.assert_allclose(model.predict_proba(catalog), np.mean(list(each.values()), axis=0))
    # a product without its image is predicted by the text extractors alone
    rows = _csv_rows(tiny_catalog)
    rows[0]["image"] = "missing.jpg"
    _write_csv(tiny_catalog.parent / "new.csv", rows[:1])
    one = load_catalog(tiny_catalog.parent / "new.csv")
    proba, used = model.predict_details(one)
    assert used == ["text"]
    np.testing.assert_allclose(proba[0], (each[keys[0]][0] + each[keys[1]][0]) / 2)
    # the saved model predicts the same
    np.testing.assert_allclose(load_model(tmp_path / "m").predict_proba(catalog), model.predict_proba(catalog))
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["extractors"]["image:grey-histogram"] == {**meta["extractors"]["image:grey-histogram"],
                                                          "kind": "image", "plugin": "grey-histogram"}


def test_several_extractors_per_modality_concat(tiny_catalog, tmp_path, classify_plugins):
    from placedemarche.classify import _hstack

    catalog = load_catalog(tiny_catalog).validated()
    config = TrainConfig(text=["tfidf:min_df=1", "recording-vocab"], image="mean-colour", folds=2)
    result = train(catalog, config)
    model = result.model
    assert list(model.blocks) == ["text:tfidf:min_df=1", "text:recording-vocab", "image"]
    assert set(model.fusion_heads) == {"text", "text+image"}  # one head per group of several blocks
    assert set(result.summary["results"]) == {"text:tfidf:min_df=1", "text:recording-vocab", "text", "image",
                                              "text+image"}
    rows = _csv_rows(tiny_catalog)
    rows[1]["image"] = "missing.jpg"
    _write_csv(tiny_catalog.parent / "new.csv", rows[:2])
    new = load_catalog(tiny_catalog.parent / "new.csv")
    proba, used = model.predict_details(new)
    assert used == ["text+image", "text"]
    text_keys = ["text:tfidf:min_df=1", "text:recording-vocab"]
    features = {key: model.blocks[key].features(new.texts(), None) for key in text_keys}
    features["image"] = model.blocks["image"].features(new.image_paths[:1], None)
    np.testing.assert_allclose(proba[0], model.fusion_heads["text+image"].predict_proba(
        _hstack([features[text_keys[0]][:1], features[text_keys[1]][:1], features["image"]]))[0])
    np.testing.assert_allclose(proba[1], model.fusion_heads["text"].predict_proba(
        _hstack([features[key][1:] for key in text_keys]))[0])


def test_cli_combines_several_extractors_and_refuses_duplicates(tiny_catalog, tmp_path, classify_plugins):
    runner = CliRunner()
    done = runner.invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf:min_df=1",
                               "--image", "mean-colour", "--image", "grey-histogram", "--fusion", "mean",
                               "--folds", "2", "--out", str(tmp_path / "m"), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "image:grey-histogram" in done.output and "text+image" in done.output
    done = runner.invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf", "--text", "tfidf",
                               "--no-progress"])
    assert done.exit_code == 1
    assert "--text tfidf is given twice" in done.output and "Traceback" not in done.output
    done = runner.invoke(cli, ["train", "--data", str(tiny_catalog), "--image", "mobilenet",
                               "--image", "mean-colour", "--finetune", "--no-progress"])
    assert done.exit_code == 1
    assert "fine-tuning needs an image backbone: give one --image (got 2)" in done.output


def test_saved_model_predicts_the_same_in_a_new_process(tmp_path):
    """Round trip: train on a generated catalogue, save, load and predict in another process."""
    from helpers import make_catalog

    csv_path = make_catalog(tmp_path / "cat", per_category=6, seed=3)
    catalog = load_catalog(csv_path).validated()
    model_dir = tmp_path / "model"
    result = train(catalog, TrainConfig(text="tfidf:min_df=1", folds=0), out=model_dir)
    here = result.predict_proba(catalog)
    script = textwrap.dedent(f"""
        import json, numpy as np
        from placedemarche.data.catalog import load_catalog
        from placedemarche.classify import load_model
        model = load_model({str(model_dir)!r})
        proba = model.predict_proba(load_catalog({str(csv_path)!r}))
        print(json.dumps({{"proba": proba.tolist(), "categories": model.categories}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    there = json.loads(done.stdout.strip().splitlines()[-1])
    assert there["categories"] == result.model.categories
    np.testing.assert_allclose(np.array(there["proba"]), here, rtol=1e-6, atol=1e-9)
    meta = json.loads((model_dir / "model.json").read_text())
    assert {"placedemarche", "scikit-learn", "numpy"} <= set(meta["versions"])
    assert meta["extractors"]["text"]["plugin"] == "tfidf"


def test_cli_train_then_predict(tiny_catalog, tmp_path, classify_plugins):
    runner = CliRunner()
    model_dir = tmp_path / "m"
    done = runner.invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf:min_df=1",
                               "--image", "mean-colour", "--folds", "3", "--out", str(model_dir),
                               "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "3-fold stratified cross-validation" in done.output
    assert "mean ± sd" in done.output and "text+image" in done.output
    assert (model_dir / "model.json").is_file()
    out = tmp_path / "pred.csv"
    done = runner.invoke(cli, ["predict", "--model", str(model_dir), "--data", str(tiny_catalog),
                               "--out", str(out), "--top-k", "3", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "18 products predicted (text+image: 18)" in done.output
    assert "accuracy against the catalogue's categories: 1.000" in done.output
    rows = _csv_rows(out)
    assert len(rows) == 18 and {"category_3", "probability_3", "true_category"} <= set(rows[0])


# -- bad input ---------------------------------------------------------------------------
def test_unknown_category_column_is_a_one_line_error(tiny_catalog):
    done = CliRunner().invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf",
                                    "--label-column", "rayon", "--no-progress"])
    assert done.exit_code == 1
    assert "no column 'rayon'" in done.output and "Traceback" not in done.output


def test_class_smaller_than_folds_suggests_fewer_folds(tmp_path):
    from helpers import make_catalog

    csv_path = make_catalog(tmp_path / "c", per_category=3)
    done = CliRunner().invoke(cli, ["train", "--data", str(csv_path), "--text", "tfidf:min_df=1",
                                    "--folds", "5", "--no-progress"])
    assert done.exit_code == 1
    # every category is too small for the folds: the one case left out categories cannot fix
    assert "fewer than 5 products (the largest has 3)" in done.output and "fewer --folds" in done.output


def test_empty_catalogue_is_refused(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("uniq_id,product_name,description,image,category\n")
    with pytest.raises(PlaceDeMarcheError, match="empty"):
        train(load_catalog(path), TrainConfig(text="tfidf"))
    done = CliRunner().invoke(cli, ["train", "--data", str(path), "--text", "tfidf", "--no-progress"])
    assert done.exit_code == 1 and "empty" in done.output


def test_unlabelled_or_single_category_catalogue_is_refused(tmp_path):
    from helpers import make_catalog

    path = make_catalog(tmp_path / "one", per_category=6, categories=["Watches"])
    with pytest.raises(PlaceDeMarcheError, match="1 category"):
        train(load_catalog(path), TrainConfig(text="tfidf:min_df=1", folds=2))


@pytest.fixture
def saved_model(tiny_catalog, tmp_path):
    model_dir = tmp_path / "model"
    train(load_catalog(tiny_catalog).validated(), TrainConfig(text="tfidf:min_df=1", folds=0), out=model_dir)
    return model_dir


def test_model_from_another_version_is_refused(saved_model):
    meta = json.loads((saved_model / "model.json").read_text())
    meta["versions"]["placedemarche"] = "9.7.0"
    (saved_model / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="saved with placedemarche 9.7.0") as info:
        load_model(saved_model)
    assert "\n" not in str(info.value)
    done = CliRunner().invoke(cli, ["predict", "--model", str(saved_model), "--data", str(saved_model)])
    assert done.exit_code == 1 and "retrain it" in done.output and "Traceback" not in done.output


def test_model_with_one_fusion_head_from_before_several_extractors_still_loads(tiny_catalog, tmp_path,
                                                                               classify_plugins):
    import joblib

    catalog = load_catalog(tiny_catalog).validated()
    model_dir = tmp_path / "model"
    result = train(catalog, TrainConfig(text="tfidf:min_df=1", image="mean-colour", folds=0), out=model_dir)
    from placedemarche.classify import ModelWarning

    objects = joblib.load(model_dir / "model.joblib")
    objects["fusion_head"] = objects.pop("fusion_heads")["text+image"]  # how the first version saved it
    joblib.dump(objects, model_dir / "model.joblib")
    meta = json.loads((model_dir / "model.json").read_text())
    for key in ("sha256", "default_group"):  # nor did it record these
        del meta[key]
    (model_dir / "model.json").write_text(json.dumps(meta))
    with pytest.warns(ModelWarning, match="no checksum"):
        loaded = load_model(model_dir)
    assert set(loaded.fusion_heads) == {"text+image"}
    np.testing.assert_allclose(loaded.predict_proba(catalog), result.predict_proba(catalog))


def test_model_from_another_scikit_learn_is_refused(saved_model):
    meta = json.loads((saved_model / "model.json").read_text())
    meta["versions"]["scikit-learn"] = "0.24.2"
    (saved_model / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="scikit-learn 0.24.2"):
        load_model(saved_model)


@pytest.mark.parametrize("damage", ["no-json", "bad-json", "no-objects", "bad-objects", "no-dir"])
def test_missing_or_damaged_model_files_give_one_line_errors(saved_model, damage):
    target = saved_model
    if damage == "no-json":
        (saved_model / "model.json").unlink()
    elif damage == "bad-json":
        (saved_model / "model.json").write_text("{not json")
    elif damage == "no-objects":
        (saved_model / "model.skops").unlink()
    elif damage == "bad-objects":
        (saved_model / "model.skops").write_bytes(b"garbage, not a skops file")
        _edit_meta(saved_model, lambda meta: meta["sha256"].update(
            {"model.skops": hashlib.sha256(b"garbage, not a skops file").hexdigest()}))
    else:
        target = saved_model / "nowhere"
    with pytest.raises(ModelError) as info:
        load_model(target)
    message = str(info.value)
    assert "\n" not in message and str(target) in message


def test_bad_settings_are_refused(tiny_catalog):
    catalog = load_catalog(tiny_catalog).validated()
    with pytest.raises(PlaceDeMarcheError, match="nothing to train"):
        train(catalog, TrainConfig())
    with pytest.raises(PlaceDeMarcheError, match="--folds must be"):
        train(catalog, TrainConfig(text="tfidf", folds=1))
    with pytest.raises(PlaceDeMarcheError, match="unknown classifier"):
        train(catalog, TrainConfig(text="tfidf", classifier="xgboost"))


@pytest.mark.parametrize("classifier", ["svm", "rf", "knn", "mlp"])
def test_other_classifiers(tiny_catalog, classifier, classify_plugins):
    catalog = load_catalog(tiny_catalog).validated()
    result = train(catalog, TrainConfig(text="tfidf:min_df=1", classifier=classifier, folds=3))
    # every head learns the tiny catalogue (separable by construction): wiring, not a ranking
    assert result.summary["results"]["text"]["accuracy_mean"] >= 0.8
    assert result.predict_proba(catalog).shape == (18, 3)


# -- the confusion matrix plot -------------------------------------------------------------
def _content_box(png):
    """The bounding box of what is not white background in a PNG, and the image size."""
    from PIL import Image, ImageChops

    with Image.open(png) as im:
        rgb = im.convert("RGB")
    return ImageChops.difference(rgb, Image.new("RGB", rgb.size, (255, 255, 255))).getbbox(), rgb.size


def test_confusion_png_of_a_classifier_names_predicted_categories_without_wide_margins(
        tiny_catalog, tmp_path, classify_plugins, monkeypatch):
    import matplotlib.figure

    seen = {}
    savefig = matplotlib.figure.Figure.savefig

    def spy(fig, path, *args, **kwargs):
        seen[Path(path).name] = (fig.axes[0].get_xlabel(), kwargs.get("bbox_inches"))
        return savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    out = tmp_path / "model"
    write_training_report(train(load_catalog(tiny_catalog).validated(), TrainConfig(text="tfidf:min_df=1", folds=3),
                                out=out), out)
    assert seen["confusion_matrix.png"] == ("predicted category", "tight")
    (left, top, right, bottom), (width, height) = _content_box(out / "confusion_matrix.png")
    # the plot fills the image: only the small padding of a tight bounding box is left blank
    assert left + (width - right) <= 0.1 * width and top + (height - bottom) <= 0.1 * height


def test_confusion_png_of_the_clustering_study_keeps_its_wording(tmp_path, monkeypatch):
    import matplotlib.figure

    from placedemarche.report.plots import plot_confusion

    seen = []
    savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, path, *a, **k: (seen.append((fig.axes[0].get_xlabel(), *fig.get_size_inches())),
                                                    savefig(fig, path, *a, **k)))
    plot_confusion(np.array([[3, 1], [0, 4]]), ["A", "B"], "KMeans", tmp_path / "c.png")
    plot_confusion(np.eye(12, dtype=int), [f"category {i}" for i in range(12)], "KMeans", tmp_path / "big.png")
    (label, width, height), (_, big_width, big_height) = seen
    assert label == "cluster (named after its matched category)"
    # the figure is sized to the matrix (cells of a constant size), not padded to a minimum
    assert big_width > 4 * width and big_height > 4 * height


# -- file modes ------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o002, 0o664)])
def test_result_files_honour_the_umask(tiny_catalog, tmp_path, classify_plugins, umask, expected):
    import os
    import stat

    catalog = load_catalog(tiny_catalog).validated()
    out = tmp_path / "model"
    old = os.umask(umask)
    try:
        write_training_report(train(catalog, TrainConfig(text="tfidf:min_df=1", image="mean-colour", folds=2),
                                    out=out), out)
    finally:
        os.umask(old)
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in out.iterdir() if p.is_file()}
    assert {"metrics.json", "model.json", "classification_report.txt", "folds.csv", "model.joblib",
            "confusion_matrix.png"} <= set(modes)
    assert modes == {name: oct(expected) for name in modes}


def test_a_failed_model_save_leaves_no_temporary_file(saved_model, monkeypatch):
    from placedemarche.classify import save_model

    model = load_model(saved_model)
    before = (saved_model / "model.skops").read_bytes()

    def broken_fsync(fd):  # the objects were written to the temporary file, then the disk fails
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, saved_model)
    assert sorted(p.name for p in saved_model.iterdir() if p.name.startswith(".")) == []
    assert (saved_model / "model.skops").read_bytes() == before


# -- images not found at prediction time ------------------------------------------------------
def _move_catalog_without_images(tiny_catalog, tmp_path):
    """The catalogue CSV alone in another directory: its images are not beside it any more."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "catalog.csv").write_text(tiny_catalog.read_text(encoding="utf-8"), encoding="utf-8")
    return elsewhere / "catalog.csv"


def test_images_not_found_are_counted_and_each_row_says_why(tiny_catalog, tmp_path, classify_plugins):
    catalog = load_catalog(tiny_catalog).validated()
    model = train(catalog, TrainConfig(text="tfidf:min_df=1", image="mean-colour", folds=0)).model
    moved = _move_catalog_without_images(tiny_catalog, tmp_path)
    result = predict_catalog(model, load_catalog(moved), out=tmp_path / "pred.csv")
    assert result.missing_images == 18 and result.many_images_missing
    assert result.missing_image_dir == str(moved.parent)
    rows = _csv_rows(tmp_path / "pred.csv")
    first = moved.parent / _csv_rows(tiny_catalog)[0]["image"]
    assert rows[0]["note"] == f"image file not found: {first}; predicted from text"
    assert {r["modality"] for r in rows} == {"text"}
    # the images where they are: nothing missing
    assert predict_catalog(model, load_catalog(tiny_catalog)).missing_images == 0


def test_pm_predict_says_once_that_images_were_not_found(tiny_catalog, tmp_path, classify_plugins):
    from helpers import make_catalog

    runner = CliRunner()
    model_dir = tmp_path / "m"
    done = runner.invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf:min_df=1",
                               "--image", "mean-colour", "--folds", "0", "--out", str(model_dir), "--no-progress"])
    assert done.exit_code == 0, done.output
    moved = _move_catalog_without_images(tiny_catalog, tmp_path)
    done = runner.invoke(cli, ["predict", "--model", str(model_dir), "--data", str(moved),
                               "--out", str(tmp_path / "p.csv"), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert done.output.count("not found") == 1
    assert f"18 of 18 products' image files were not found in {moved.parent}" in done.output
    assert "--image-dir" in done.output
    # with the right --image-dir, nothing to say
    done = runner.invoke(cli, ["predict", "--model", str(model_dir), "--data", str(moved), "--image-dir",
                               str(tiny_catalog.parent / "images"), "--out", str(tmp_path / "p.csv"),
                               "--no-progress"])
    assert done.exit_code == 0 and "not found" not in done.output
    # one photo missing among 36 products is left to the note of its row
    bigger = make_catalog(tmp_path / "bigger", per_category=12, seed=1)
    rows = _csv_rows(bigger)
    rows[5]["image"] = "lost.jpg"
    _write_csv(bigger, rows)
    done = runner.invoke(cli, ["predict", "--model", str(model_dir), "--data", str(bigger),
                               "--out", str(tmp_path / "p.csv"), "--no-progress"])
    assert done.exit_code == 0 and "not found" not in done.output
    assert _csv_rows(tmp_path / "p.csv")[5]["note"].startswith("image file not found: ")


# -- the model directory is a pickle: checksum, validation ----------------------------------
class _Marker:
    """Unpickling this creates a file: proof that loading ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_model_objects_checksum_is_recorded_and_a_replaced_file_is_refused_before_unpickling(saved_model,
                                                                                             tmp_path):
    import hashlib

    import joblib

    meta = json.loads((saved_model / "model.json").read_text())
    digest = hashlib.sha256((saved_model / "model.skops").read_bytes()).hexdigest()
    assert meta["sha256"] == {"model.skops": digest}
    marker = tmp_path / "code-ran"
    joblib.dump({"blocks": _Marker(marker)}, saved_model / "model.skops")
    with pytest.raises(ModelError) as info:
        load_model(saved_model)
    message = str(info.value)
    assert "model.skops does not match the checksum in model.json" in message
    assert "train again or restore it" in message and "\n" not in message
    assert not marker.exists()
    done = CliRunner().invoke(cli, ["predict", "--model", str(saved_model), "--data", str(saved_model)])
    assert done.exit_code == 1 and "does not match the checksum" in done.output
    assert "Traceback" not in done.output and not marker.exists()


def test_model_saved_without_a_checksum_loads_with_a_warning(saved_model, tiny_catalog):
    from placedemarche.classify import ModelWarning

    meta = json.loads((saved_model / "model.json").read_text())
    del meta["sha256"]  # how models were saved before checksums
    (saved_model / "model.json").write_text(json.dumps(meta))
    with pytest.warns(ModelWarning, match="no checksum"):
        model = load_model(saved_model)
    assert model.predict(["analog watch dial strap"]) == ["Watches"]


def test_predict_help_and_docs_say_a_model_runs_code_when_loaded():
    from placedemarche.classify import load_model as loader

    done = CliRunner().invoke(cli, ["predict", "--help"])
    assert done.exit_code == 0
    help_text = " ".join(done.output.split())
    assert "pickle" in help_text and "runs code" in help_text and "trust" in help_text
    assert "runs code" in " ".join(loader.__doc__.split())
    docs = (Path(__file__).parents[1] / "docs" / "classify.md").read_text(encoding="utf-8")
    assert "runs code" in " ".join(docs.split())


def _edit_meta(model_dir, edit):
    meta = json.loads((model_dir / "model.json").read_text())
    edit(meta)
    (model_dir / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("edit, says", [
    (lambda m: m["categories"].reverse(), "categories"),
    (lambda m: m["categories"].pop(), "categories"),
    (lambda m: m["categories"].__setitem__(0, "Toys"), "categories"),
    (lambda m: m["versions"].__setitem__("placedemarche", 1), "placedemarche"),
    (lambda m: m["versions"].__setitem__("scikit-learn", [1, 5]), "scikit-learn"),
    (lambda m: m.pop("categories"), "categories"),
    (lambda m: m.pop("config"), "config"),
    (lambda m: m.pop("versions"), "versions"),
    (lambda m: m["config"].__setitem__("text", ["tfidf:min_df=1", "bert"]), "extractors"),
    (lambda m: m["config"].__setitem__("colour", "red"), "config"),
], ids=["reordered", "removed-category", "renamed-category", "int-version", "list-version",
        "no-categories", "no-config", "no-versions", "other-extractors", "unknown-setting"])
def test_model_json_that_does_not_match_the_model_is_a_one_line_error(saved_model, edit, says):
    _edit_meta(saved_model, edit)
    with pytest.raises(ModelError) as info:
        load_model(saved_model)
    message = str(info.value)
    assert "\n" not in message and "model.json" in message and says in message
    done = CliRunner().invoke(cli, ["predict", "--model", str(saved_model), "--data", str(saved_model)])
    assert done.exit_code == 1 and "Traceback" not in done.output and "model.json" in done.output


# -- a fused model that scores below one of its modalities ------------------------------------
@pytest.fixture
def worse_fusion(monkeypatch):
    """Make the fused group's out-of-fold predictions wrong for 2 products of each fold, as a
    weak image block can (0.942 fused vs 0.952 text measured with tfidf + efficientnet-lite0)."""
    from placedemarche.classify import crossval

    fold_proba = crossval._fold_proba

    def spoiled(*args, **kwargs):
        out = fold_proba(*args, **kwargs)
        out["text+image"][:2] = np.roll(out["text+image"][:2], 1, axis=1)
        return out

    monkeypatch.setattr(crossval, "_fold_proba", spoiled)


def test_fused_model_below_a_single_modality_is_reported_and_predict_uses_the_best(
        tiny_catalog, tmp_path, classify_plugins, worse_fusion):
    runner = CliRunner()
    model_dir = tmp_path / "m"
    done = runner.invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf:min_df=1",
                               "--image", "mean-colour", "--folds", "3", "--out", str(model_dir),
                               "--no-progress"])
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "text+image scored below text" in said and "pm predict uses text by default" in said
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["best_group"] == "text"
    assert metrics["results"]["text+image"]["accuracy_mean"] < metrics["results"]["text"]["accuracy_mean"]
    assert "text+image scored below text" in metrics["fusion_warning"]
    assert json.loads((model_dir / "model.json").read_text())["default_group"] == "text"

    model = load_model(model_dir)
    catalog = load_catalog(tiny_catalog)
    proba, used = model.predict_details(catalog)
    assert set(used) == {"text"}
    np.testing.assert_allclose(proba, _block_proba(model, "text", catalog))
    proba, used = model.predict_details(catalog, group="text+image")
    assert set(used) == {"text+image"}
    # a product without the best group's modality falls back to what it has
    rows = _csv_rows(tiny_catalog)
    rows[0].update(product_name="", description="")
    _write_csv(tiny_catalog.parent / "new.csv", rows[:2])
    assert model.predict_details(load_catalog(tiny_catalog.parent / "new.csv"))[1] == ["image", "text"]
    with pytest.raises(PlaceDeMarcheError, match="no group 'sound'"):
        model.predict_details(catalog, group="sound")

    out = tmp_path / "p.csv"
    done = runner.invoke(cli, ["predict", "--model", str(model_dir), "--data", str(tiny_catalog),
                               "--out", str(out), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "18 products predicted (text: 18)" in done.output and "--group text+image" in done.output
    done = runner.invoke(cli, ["predict", "--model", str(model_dir), "--data", str(tiny_catalog),
                               "--out", str(out), "--group", "text+image", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "18 products predicted (text+image: 18)" in done.output
    done = runner.invoke(cli, ["predict", "--model", str(model_dir), "--data", str(tiny_catalog),
                               "--out", str(out), "--group", "sound", "--no-progress"])
    assert done.exit_code == 1 and "no group 'sound'" in done.output and "Traceback" not in done.output


def test_fused_model_at_least_as_good_is_the_default(tiny_catalog, tmp_path, classify_plugins):
    result = train(load_catalog(tiny_catalog).validated(),
                   TrainConfig(text="tfidf:min_df=1", image="mean-colour", folds=3), out=tmp_path / "m")
    assert result.summary["best_group"] == "text+image" and "fusion_warning" not in result.summary
    assert result.model.default_group == "text+image"
    assert json.loads((tmp_path / "m" / "model.json").read_text())["default_group"] == "text+image"


def test_pm_train_ends_with_the_html_report_path(tiny_catalog, tmp_path, classify_plugins):
    model_dir = tmp_path / "m"
    done = CliRunner().invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf:min_df=1",
                                    "--folds", "2", "--out", str(model_dir), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert done.output.rstrip().splitlines()[-1] == f"Report: {model_dir / 'report.html'}"
