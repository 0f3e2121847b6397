"""The supervised classifier: cross-validation, fold-only fitting, model directory, pm train/predict."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from placedemarche import ImageExtractor, TextExtractor, hookimpl
from placedemarche.cli.main import cli
from placedemarche.core import plugins
from placedemarche.core.cache import FeatureCache
from placedemarche.core.catalog import load_catalog
from placedemarche.core.classify import (ModelError, TrainConfig, load_model, predict_catalog, train)
from placedemarche.core.errors import PlaceDeMarcheError


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
def test_plugins():
    name = plugins.register_plugin(_Plugin, name="classify-test-plugins", provider="tests")
    RecordingVocabulary.fitted_on = []
    yield
    plugins.unregister_plugin(name)


def _csv_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_cross_validation_scores_every_modality_and_writes_the_report(tiny_catalog, tmp_path, test_plugins):
    catalog = load_catalog(tiny_catalog).validated()
    out = tmp_path / "model"
    result = train(catalog, TrainConfig(text="tfidf:min_df=1", image="mean-colour", folds=3),
                   cache=FeatureCache(tmp_path / "c"), out=out)
    assert set(result.summary["results"]) == {"text", "image", "text+image"}
    assert len(result.folds) == 3
    assert sum(f["test"] for f in result.folds) == len(catalog)
    fused = result.summary["results"]["text+image"]
    # the generated texts and colours separate the three categories
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


def test_learning_extractors_are_fitted_on_training_folds_only(tiny_catalog, tmp_path, test_plugins):
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


def test_frozen_features_come_from_the_cache(tiny_catalog, tmp_path, test_plugins):
    catalog = load_catalog(tiny_catalog).validated()
    cache = FeatureCache(tmp_path / "c")
    first = train(catalog, TrainConfig(image="mean-colour", folds=2), cache=cache)
    second = train(catalog, TrainConfig(image="mean-colour", folds=2), cache=cache)
    assert first.summary["features"]["image"]["cached"] is False
    assert second.summary["features"]["image"]["cached"] is True
    assert first.folds[0]["image:accuracy"] == second.folds[0]["image:accuracy"]


def test_api_predict_and_predict_proba(tiny_catalog, test_plugins):
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


def test_missing_modality_is_predicted_from_the_other_or_reported(tiny_catalog, tmp_path, test_plugins):
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
    assert "no usable image" in written[1]["note"]
    assert written[2]["category"] == "Baby Care"
    assert written[3]["category"] == "" and "no usable text" in written[3]["note"]
    assert float(written[0]["probability"]) >= float(written[0]["probability_2"])
    assert result.counts == {"text+image": 1, "text": 1, "image": 1, "none": 1}


def test_mean_fusion(tiny_catalog, test_plugins):
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


def test_several_extractors_per_modality_mean(tiny_catalog, tmp_path, test_plugins):
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


def test_several_extractors_per_modality_concat(tiny_catalog, tmp_path, test_plugins):
    from placedemarche.core.classify import _hstack

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


def test_cli_combines_several_extractors_and_refuses_duplicates(tiny_catalog, tmp_path, test_plugins):
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
    from conftest import make_catalog

    csv_path = make_catalog(tmp_path / "cat", per_category=6, seed=3)
    catalog = load_catalog(csv_path).validated()
    model_dir = tmp_path / "model"
    result = train(catalog, TrainConfig(text="tfidf:min_df=1", folds=0), out=model_dir)
    here = result.predict_proba(catalog)
    script = textwrap.dedent(f"""
        import json, numpy as np
        from placedemarche.core.catalog import load_catalog
        from placedemarche.core.classify import load_model
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


def test_cli_train_then_predict(tiny_catalog, tmp_path, test_plugins):
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
    from conftest import make_catalog

    csv_path = make_catalog(tmp_path / "c", per_category=3)
    done = CliRunner().invoke(cli, ["train", "--data", str(csv_path), "--text", "tfidf:min_df=1",
                                    "--folds", "5", "--no-progress"])
    assert done.exit_code == 1
    assert "fewer than the 5 folds" in done.output and "--folds 3 or fewer" in done.output


def test_empty_catalogue_is_refused(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("uniq_id,product_name,description,image,category\n")
    with pytest.raises(PlaceDeMarcheError, match="empty"):
        train(load_catalog(path), TrainConfig(text="tfidf"))
    done = CliRunner().invoke(cli, ["train", "--data", str(path), "--text", "tfidf", "--no-progress"])
    assert done.exit_code == 1 and "empty" in done.output


def test_unlabelled_or_single_category_catalogue_is_refused(tmp_path):
    from conftest import make_catalog

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
                                                                               test_plugins):
    import joblib

    catalog = load_catalog(tiny_catalog).validated()
    model_dir = tmp_path / "model"
    result = train(catalog, TrainConfig(text="tfidf:min_df=1", image="mean-colour", folds=0), out=model_dir)
    objects = joblib.load(model_dir / "model.joblib")
    objects["fusion_head"] = objects.pop("fusion_heads")["text+image"]  # how the first version saved it
    joblib.dump(objects, model_dir / "model.joblib")
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
        (saved_model / "model.joblib").unlink()
    elif damage == "bad-objects":
        (saved_model / "model.joblib").write_bytes(b"garbage, not a pickle")
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
def test_other_classifiers(tiny_catalog, classifier, test_plugins):
    catalog = load_catalog(tiny_catalog).validated()
    result = train(catalog, TrainConfig(text="tfidf:min_df=1", classifier=classifier, folds=3))
    assert result.summary["results"]["text"]["accuracy_mean"] >= 0.8
    assert result.predict_proba(catalog).shape == (18, 3)
