"""Classifier heads as plugins: the built-ins, specs with parameters in `pm train --classifier`,
the example package's head, and models whose head (or its module) is not installed."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import make_catalog
from placedemarche.cli.main import cli
from placedemarche.core import plugins
from placedemarche.data.catalog import load_catalog
from placedemarche.classify import ModelError, TrainConfig, load_model, make_head, save_model, train
from placedemarche.classify.blocks import BlockScaler, fit_head, head_proba

BUILT_IN_HEADS = ("logreg", "linear-svm", "svm", "rf", "knn", "mlp", "hist-gb")


@pytest.fixture(scope="module")
def text_features(tmp_path_factory):
    """Scaled TF-IDF rows (sparse, as pm train gives a head) of a generated 3-category catalogue."""
    catalog = load_catalog(make_catalog(tmp_path_factory.mktemp("heads"), per_category=10, seed=5)).validated()
    X = plugins.create_plugin("text", "tfidf:min_df=1").fit_transform(catalog.texts())
    return BlockScaler().fit(X).transform(X), np.array(catalog.labels)


def test_every_built_in_head_is_registered_by_placedemarche():
    registry = plugins.available_plugins("classifier")
    assert set(BUILT_IN_HEADS) <= set(registry)
    assert {registry[name].distribution for name in BUILT_IN_HEADS} == {"placedemarche"}
    assert registry["hist-gb"].cls.accepts_sparse is False


@pytest.mark.parametrize("name", BUILT_IN_HEADS)
def test_built_in_head_gives_probabilities_in_classes_order(name, text_features):
    X, labels = text_features
    head = fit_head(make_head(TrainConfig(text="tfidf", classifier=name)), X, labels)
    assert list(head.classes_) == ["Baby Care", "Kitchen", "Watches"]
    P = head_proba(head, X)
    assert P.shape == (len(labels), 3)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
    assert (P >= 0).all()
    # predict is the most probable class, named from classes_
    predicted = head.predict(X if head.accepts_sparse else X.toarray())
    assert list(predicted) == list(head.classes_[np.argmax(P, axis=1)])
    # the generated catalogue is separable by construction: this checks the head is wired, not good
    if name != "hist-gb":  # 30 rows are too few for its 20-row leaves: it predicts the priors
        assert np.mean(predicted == labels) >= 0.9


@pytest.mark.parametrize("C, class_weight, seed", [(10.0, False, 0), (0.5, True, 3)])
def test_logreg_head_is_the_head_make_head_gave_before_heads_were_plugins(text_features, C, class_weight, seed):
    from sklearn.linear_model import LogisticRegression

    X, labels = text_features
    before = LogisticRegression(C=C, max_iter=5000, class_weight="balanced" if class_weight else None,
                                random_state=seed).fit(X, labels)
    head = make_head(TrainConfig(text="tfidf", C=C, class_weight=class_weight, seed=seed)).fit(X, labels)
    assert head.get_params() == {"C": C, "class_weight": "balanced" if class_weight else None,
                                 "max_iter": 5000, "solver": "lbfgs", "random_state": seed}
    np.testing.assert_array_equal(head.predict_proba(X), before.predict_proba(X))


def test_a_trained_models_logreg_heads_predict_as_scikit_learns(tiny_catalog):
    from sklearn.linear_model import LogisticRegression

    catalog = load_catalog(tiny_catalog).validated()
    model = train(catalog, TrainConfig(text="tfidf:min_df=1", folds=0)).model
    block = model.blocks["text"]
    Z = block.features(catalog.texts(), None)
    y = np.array([model.categories.index(label) for label in catalog.labels])
    before = LogisticRegression(C=10.0, max_iter=5000, random_state=0).fit(Z, y)
    np.testing.assert_array_equal(model.predict_proba(catalog), before.predict_proba(Z))


def test_spec_parameters_win_over_C_class_weight_and_seed():
    head = make_head(TrainConfig(text="tfidf", classifier="logreg:C=0.5", C=3.0, class_weight=True, seed=4))
    assert (head.C, head.class_weight, head.random_state) == (0.5, "balanced", 4)
    head = make_head(TrainConfig(text="tfidf", classifier="logreg:class_weight=None,random_state=9",
                                 class_weight=True, seed=4))
    assert (head.C, head.class_weight, head.random_state) == (10.0, None, 9)
    # heads without C / class_weight / random_state do not get them
    assert make_head(TrainConfig(text="tfidf", classifier="knn:n_neighbors=3", C=3.0,
                                 class_weight=True)).get_params() == {
        "n_neighbors": 3, "metric": "cosine", "weights": "distance"}


def test_a_dense_only_head_gets_dense_features_in_training_and_prediction(tiny_catalog):
    catalog = load_catalog(tiny_catalog).validated()
    model = train(catalog, TrainConfig(text="tfidf:min_df=1", classifier="hist-gb:max_iter=5", folds=0)).model
    P = model.predict_proba(catalog)
    assert P.shape == (18, 3)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)


def test_pm_train_classifier_spec_with_parameters_is_recorded_and_reloaded(tiny_catalog, tmp_path):
    model_dir = tmp_path / "m"
    done = CliRunner().invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf:min_df=1",
                                    "--classifier", "logreg:C=0.5", "--C", "3", "--class-weight",
                                    "--folds", "2", "--out", str(model_dir), "--no-progress"])
    assert done.exit_code == 0, done.output
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["config"]["classifier"] == "logreg:C=0.5"
    assert meta["head"] == {"spec": "logreg:C=0.5", "plugin": "logreg",
                            "class": "placedemarche.plugins.classifiers.logreg.LogisticRegressionHead",
                            "provider": "placedemarche", "distribution": "placedemarche"}
    head = load_model(model_dir).blocks["text"].head
    assert (head.C, head.class_weight) == (0.5, "balanced")  # the spec's C, --class-weight


def test_unknown_head_or_parameter_is_reported_before_the_data_is_read(tmp_path):
    runner = CliRunner()
    missing = tmp_path / "no-such.csv"
    done = runner.invoke(cli, ["train", "--data", str(missing), "--text", "tfidf",
                               "--classifier", "logreg-cv", "--no-progress"])
    assert done.exit_code == 1 and "Traceback" not in done.output
    said = " ".join(done.output.split())
    assert "unknown classifier head 'logreg-cv': did you mean 'logreg'?" in said
    available = said.partition("available: ")[2].split(", ")
    assert set(BUILT_IN_HEADS) <= set(available)  # the registry's names
    assert "no-such.csv" not in said
    done = runner.invoke(cli, ["train", "--data", str(missing), "--text", "tfidf:colour=1",
                               "--classifier", "knn:C=1", "--no-progress"])
    said = " ".join(done.output.split())
    assert done.exit_code == 1 and "2 problems" in said  # all problems at once
    assert "plugin 'knn' has no parameter 'C'" in said and "plugin 'tfidf' has no parameter 'colour'" in said


# -- the example package's head, and models whose head is not installed ------------------------
@pytest.fixture
def example_head():
    if "nearest-centroid" not in plugins.available_plugins("classifier"):
        pytest.fail("install the example plugin: pip install ./examples/placedemarche-colour-histogram")


def test_example_package_head_trains_and_predicts_through_the_cli(tiny_catalog, tmp_path, example_head):
    runner = CliRunner()
    model_dir = tmp_path / "m"
    done = runner.invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf:min_df=1",
                               "--classifier", "nearest-centroid:temperature=0.5", "--folds", "3",
                               "--out", str(model_dir), "--no-progress"])
    assert done.exit_code == 0, done.output
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["results"]["text"]["accuracy_mean"] >= 0.9  # the tiny catalogue: plumbing only
    head = json.loads((model_dir / "model.json").read_text())["head"]
    assert (head["plugin"], head["distribution"]) == ("nearest-centroid", "placedemarche-colour-histogram")
    out = tmp_path / "p.csv"
    done = runner.invoke(cli, ["predict", "--model", str(model_dir), "--data", str(tiny_catalog),
                               "--out", str(out), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "accuracy against the catalogue's categories: 1.000" in done.output
    proba = load_model(model_dir).predict_proba(load_catalog(tiny_catalog))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_model_whose_head_plugin_is_not_registered_names_the_package(tiny_catalog, tmp_path, monkeypatch,
                                                                    example_head):
    model_dir = tmp_path / "m"
    train(load_catalog(tiny_catalog).validated(),
          TrainConfig(text="tfidf:min_df=1", classifier="nearest-centroid", folds=0), out=model_dir)
    monkeypatch.setenv("PM_LOAD_PLUGINS", "")  # as if the package were not installed
    plugins.reset_plugins()
    with pytest.raises(ModelError) as info:
        load_model(model_dir)
    message = str(info.value)
    assert "\n" not in message
    assert "classifier head 'nearest-centroid'" in message
    assert "pip install placedemarche-colour-histogram" in message
    done = CliRunner().invoke(cli, ["predict", "--model", str(model_dir), "--data", str(tiny_catalog),
                                    "--no-progress"])
    assert done.exit_code == 1 and "Traceback" not in done.output
    assert "pip install placedemarche-colour-histogram" in " ".join(done.output.split())


def test_model_whose_head_module_cannot_be_imported_is_a_one_line_error(tiny_catalog, tmp_path, monkeypatch):
    """The head is registered under its name but the module the pickle names is gone."""
    module_dir = tmp_path / "site"
    module_dir.mkdir()
    (module_dir / "vanishing_heads.py").write_text(textwrap.dedent("""
        import numpy as np
        from placedemarche import Classifier, hookimpl

        class UniformHead(Classifier):
            name = "uniform"
            description = "Same probability for every class (test plugin)"

            def fit(self, X, y):
                self.classes_ = np.unique(y)
                return self

            def predict_proba(self, X):
                return np.full((X.shape[0], len(self.classes_)), 1 / len(self.classes_))

        @hookimpl
        def register_classifiers(register):
            register(UniformHead)
    """))
    monkeypatch.syspath_prepend(str(module_dir))
    import vanishing_heads

    plugins.register_plugin(vanishing_heads, name="vanishing-heads", provider="tests")
    model_dir = tmp_path / "m"
    train(load_catalog(tiny_catalog).validated(), TrainConfig(text="tfidf:min_df=1", classifier="uniform",
                                                              folds=0), out=model_dir)
    monkeypatch.delitem(sys.modules, "vanishing_heads")
    (module_dir / "vanishing_heads.py").unlink()
    with pytest.raises(ModelError) as info:
        load_model(model_dir)
    message = str(info.value)
    assert "\n" not in message and "model.joblib needs the module 'vanishing_heads'" in message
    assert "pip install vanishing_heads" in message


# -- pickles of models saved before the stage packages (placedemarche.core.classify) ----------
def _write_old_model_directory(model, directory, modules):
    """A model directory as placedemarche wrote it before skops and before the stage packages:
    model.json format 1 and a joblib pickle whose classes name the old ``modules`` (class ->
    old module), registered under those names only while pickling."""
    import hashlib
    import types

    import joblib

    from placedemarche.classify.blocks import Block

    save_model(model, directory)
    (directory / "model.skops").unlink()
    objects = {"blocks": {k: Block(b.kind, b.spec, b.extractor, b.scaler, b.head, None) for k, b in model.blocks.items()},
               "fusion_heads": model.fusion_heads, "label_encoder": model.label_encoder}
    with pytest.MonkeyPatch.context() as patch:
        for cls, old in modules.items():
            module = sys.modules.get(old) or types.ModuleType(old)
            setattr(module, cls.__name__, cls)
            patch.setitem(sys.modules, old, module)
            patch.setattr(cls, "__module__", old)
        joblib.dump(objects, directory / "model.joblib")
    meta = json.loads((directory / "model.json").read_text())
    meta.update(format=1, files={"objects": "model.joblib"},
                sha256={"model.joblib": hashlib.sha256((directory / "model.joblib").read_bytes()).hexdigest()})
    (directory / "model.json").write_text(json.dumps(meta))


def test_model_pickled_with_the_old_module_paths_loads(tiny_catalog, tmp_path):
    """Models saved before the layout change name ``placedemarche.core.classify.Block`` and
    ``placedemarche.core.classify.blocks.BlockScaler`` in their pickle: loading maps the old
    paths onto the new modules, with a warning that the pickle runs code."""
    from placedemarche import classify

    catalog = load_catalog(tiny_catalog).validated()
    result = train(catalog, TrainConfig(text="tfidf:min_df=1", folds=0))
    _write_old_model_directory(result.model, tmp_path / "m",
                               {classify.Block: "placedemarche.core.classify",
                                classify.BlockScaler: "placedemarche.core.classify.blocks"})
    assert classify.Block.__module__ == "placedemarche.classify.blocks"
    assert "placedemarche.core.classify" not in sys.modules
    data = (tmp_path / "m" / "model.joblib").read_bytes()
    assert b"placedemarche.classify.blocks" not in data and b"placedemarche.core.classify.blocks" in data
    with pytest.warns(classify.ModelWarning, match="is a pickle saved by an older placedemarche: loading it runs code"):
        loaded = load_model(tmp_path / "m")
    assert type(loaded.blocks["text"]) is classify.Block and loaded.blocks["text"].top is None
    assert type(loaded.blocks["text"].scaler) is classify.BlockScaler
    np.testing.assert_array_equal(loaded.predict_proba(catalog), result.predict_proba(catalog))


def test_only_the_moved_modules_are_renamed_while_unpickling():
    from placedemarche.classify.modelobjects import moved_module

    assert moved_module("placedemarche.core.classify") == "placedemarche.classify"
    assert moved_module("placedemarche.core.classify.blocks") == "placedemarche.classify.blocks"
    assert moved_module("placedemarche.core.finetune") == "placedemarche.classify.finetune"
    assert moved_module("placedemarche.core.text") == "placedemarche.data.text"
    assert moved_module("placedemarche.core.classifyx") == "placedemarche.core.classifyx"
    assert moved_module("placedemarche.core.errors") == "placedemarche.core.errors"  # did not move
    assert moved_module("os") == "os"
