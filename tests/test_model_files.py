"""Fitted objects saved without pickle: a model directory's model.skops and a feature set's
fitted.skops load only the types placedemarche trusts (core.trusted), and never unpickle."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
from click.testing import CliRunner

from helpers import make_catalog
from placedemarche.classify import ModelError, TrainConfig, load_model, train
from placedemarche.cli.main import cli
from placedemarche.core import plugins
from placedemarche.core.trusted import UntrustedTypeError, dumps_trusted, loads_trusted
from placedemarche.data.catalog import load_catalog
from placedemarche.features.driver import extract_to_store
from placedemarche.features.fitted import FITTED_FILE, load_fitted
from placedemarche.features.store import FeatureSet, FeatureStore

BUILT_IN_HEADS = ("logreg", "linear-svm", "svm", "rf", "knn", "mlp", "hist-gb")


def _no_unpickling(monkeypatch):
    """Every way to unpickle raises: a load that gets through never read a pickle."""
    def refuse(*args, **kwargs):
        raise AssertionError("unpickled")

    class RefusingUnpickler:
        def __init__(self, *args, **kwargs):
            refuse()

    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(pickle._Unpickler, "load", refuse)  # joblib's unpickler is this one
    monkeypatch.setattr(joblib, "load", refuse)


def _rewrite_objects(model_dir: Path, data: bytes) -> None:
    """Replace model.skops and its checksum in model.json together, as an attacker would."""
    (model_dir / "model.skops").write_bytes(data)
    meta = json.loads((model_dir / "model.json").read_text())
    meta["sha256"]["model.skops"] = hashlib.sha256(data).hexdigest()
    (model_dir / "model.json").write_text(json.dumps(meta))


class _RunsCode:
    """Building this from a file creates a marker file: proof that loading ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __setstate__(self, state):
        Path(state["path"]).touch()


def test_a_model_trained_by_pm_train_with_the_default_head_loads_without_unpickling(tiny_catalog, tmp_path,
                                                                                     monkeypatch):
    model_dir = tmp_path / "model"
    done = CliRunner().invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf:min_df=1",
                                    "--folds", "0", "--out", str(model_dir), "--no-progress"])
    assert done.exit_code == 0, done.output
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["head"]["plugin"] == "logreg"  # the default head
    assert meta["files"]["objects"] == "model.skops" and "pickled" not in meta
    assert not (model_dir / "model.joblib").exists()
    catalog = load_catalog(tiny_catalog).validated()
    expected = train(catalog, TrainConfig(text="tfidf:min_df=1", folds=0)).model.predict_proba(catalog)
    _no_unpickling(monkeypatch)
    loaded = load_model(model_dir)
    np.testing.assert_array_equal(loaded.predict_proba(catalog), expected)


@pytest.mark.parametrize("untrusted", ["class", "function"])
def test_a_model_skops_file_naming_an_untrusted_type_is_refused_in_one_line(tiny_catalog, tmp_path, untrusted):
    import skops.io

    model_dir = tmp_path / "model"
    train(load_catalog(tiny_catalog).validated(), TrainConfig(text="tfidf:min_df=1", folds=0), out=model_dir)
    objects = skops.io.loads((model_dir / "model.skops").read_bytes(),
                             trusted=skops.io.get_untrusted_types(file=model_dir / "model.skops"))
    marker = tmp_path / "code-ran"
    objects["label_encoder"] = _RunsCode(marker) if untrusted == "class" else os.system
    _rewrite_objects(model_dir, skops.io.dumps(objects))
    with pytest.raises(ModelError) as info:
        load_model(model_dir)
    message = str(info.value)
    assert "\n" not in message and "model.skops is refused" in message
    assert ("test_model_files._RunsCode" if untrusted == "class" else ".system") in message
    assert "which placedemarche does not trust" in message and not marker.exists()
    done = CliRunner().invoke(cli, ["predict", "--model", str(model_dir), "--data", str(tiny_catalog)])
    assert done.exit_code == 1 and "does not trust" in done.output and "Traceback" not in done.output


def test_a_crafted_random_forest_tree_is_refused_before_predict(tiny_catalog, tmp_path):
    """Tree node indices are followed without bounds checks by scikit-learn: out-of-range ones
    are refused at load time, not read out of bounds at predict time."""
    model_dir = tmp_path / "model"
    result = train(load_catalog(tiny_catalog).validated(),
                   TrainConfig(text="tfidf:min_df=1", classifier="rf:n_estimators=3,n_jobs=1", folds=0), out=model_dir)
    assert (model_dir / "model.skops").is_file()
    forest = result.model.blocks["text"].head.estimator_
    forest.estimators_[1].tree_.children_right[0] = 10_000
    _rewrite_objects(model_dir, dumps_trusted({"blocks": result.model.blocks, "fusion_heads": {},
                                               "label_encoder": result.model.label_encoder},
                                              ["placedemarche.classify.blocks.Block",
                                               "placedemarche.classify.blocks.BlockScaler"])[0])
    with pytest.raises(ModelError, match="decision tree has node indices out of range") as info:
        load_model(model_dir)
    assert "\n" not in str(info.value)


def test_a_crafted_sparse_matrix_is_refused(fit_data):
    """The knn head keeps its sparse training rows: an index past the last column is refused."""
    from placedemarche.classify.blocks import fit_head, make_head

    _, X, labels = fit_data
    head = fit_head(make_head(TrainConfig(text="tfidf", classifier="knn")), X, labels)
    head.estimator_._fit_X.indices[3] = X.shape[1] + 7
    with pytest.raises(UntrustedTypeError, match="sparse matrix is inconsistent"):
        loads_trusted(dumps_trusted(head)[0])


@pytest.fixture(scope="module")
def fit_data(tmp_path_factory):
    catalog = load_catalog(make_catalog(tmp_path_factory.mktemp("files"), per_category=8, seed=2)).validated()
    X = plugins.create_plugin("text", "tfidf:min_df=1").fit_transform(catalog.texts())
    return catalog, X, np.array(catalog.labels)


@pytest.mark.parametrize("name", BUILT_IN_HEADS)
def test_every_built_in_head_saves_without_pickle_and_predicts_the_same(name, fit_data):
    from placedemarche.classify.blocks import fit_head, head_proba, make_head

    _, X, labels = fit_data
    spec = "rf:n_estimators=20" if name == "rf" else name
    head = fit_head(make_head(TrainConfig(text="tfidf", classifier=spec)), X, labels)
    data, untrusted = dumps_trusted(head)
    assert untrusted == [] and data is not None
    np.testing.assert_array_equal(head_proba(loads_trusted(data), X), head_proba(head, X))


@pytest.mark.parametrize("spec", ["bow:min_df=1", "tfidf:min_df=1", "word2vec:epochs=2,min_count=1",
                                  "sift:n_words=16,workers=1"])
def test_every_built_in_learned_extractor_saves_without_pickle_and_transforms_the_same(spec, fit_data):
    catalog, _, _ = fit_data
    kind = "image" if spec.startswith("sift") else "text"
    items = list(catalog.image_paths) if kind == "image" else catalog.texts()
    extractor = plugins.create_plugin(kind, spec)
    if not extractor.is_available():
        pytest.fail(f"{spec}: {extractor.install_hint()}")  # a core dependency is missing
    extractor.fit(items)
    data, untrusted = dumps_trusted(extractor)
    assert untrusted == [] and data is not None
    before, after = extractor.transform(items[:5]), loads_trusted(data).transform(items[:5])
    if hasattr(before, "toarray"):
        before, after = before.toarray(), after.toarray()
    np.testing.assert_array_equal(after, before)


def test_a_word2vec_extractor_pickled_with_its_gensim_model_still_transforms():
    """Before word2vec kept its vectors as arrays it pickled the gensim model (model.joblib)."""
    texts = ["red cotton towel", "steel analog watch", "soft cotton towel", "watch strap steel"] * 3
    new = plugins.create_plugin("text", "word2vec:epochs=2,min_count=1,normalise=none").fit(texts)
    state = {k: v for k, v in vars(new).items() if k not in ("vectors_", "vocabulary_")}
    old = type(new).__new__(type(new))
    old.__setstate__(state)  # what unpickling an old model.joblib does
    np.testing.assert_array_equal(old.transform(texts), new.transform(texts))


def test_untrusted_types_are_named_and_not_loaded(tmp_path):
    data, untrusted = dumps_trusted({"x": _RunsCode(tmp_path / "ran")})
    assert data is None and untrusted == ["test_model_files._RunsCode"]
    import skops.io

    with pytest.raises(UntrustedTypeError, match="test_model_files._RunsCode"):
        loads_trusted(skops.io.dumps({"x": _RunsCode(tmp_path / "ran")}))
    assert not (tmp_path / "ran").exists()


# -- the fitted extractor of a feature set --------------------------------------------------------
def test_a_feature_set_keeps_its_fitted_tfidf_without_pickle_and_resumes_with_it(tiny_catalog, tmp_path,
                                                                                  monkeypatch):
    catalog = load_catalog(tiny_catalog)
    done = extract_to_store(catalog, ["tfidf:min_df=1"], (), tmp_path / "store", shard_rows=5)[0]
    manifest = json.loads((done.path / "manifest.json").read_text())
    assert manifest["fit"]["file"] == FITTED_FILE and (done.path / FITTED_FILE).is_file()
    assert not (done.path / "fitted.pkl").exists()
    _no_unpickling(monkeypatch)
    fitted = load_fitted(FeatureSet(done.path))
    ids, matrix = FeatureSet(done.path).read()
    assert (fitted.transform(catalog.texts()) != matrix).nnz == 0


def test_a_fitted_file_naming_an_untrusted_type_is_refitted_not_loaded(tiny_catalog, tmp_path):
    import skops.io

    catalog = load_catalog(tiny_catalog)
    done = extract_to_store(catalog, ["tfidf:min_df=1"], (), tmp_path / "store", shard_rows=5)[0]
    marker = tmp_path / "code-ran"
    data = skops.io.dumps(_RunsCode(marker))
    (done.path / FITTED_FILE).write_bytes(data)
    manifest = json.loads((done.path / "manifest.json").read_text())
    manifest["fit"]["sha256"] = hashlib.sha256(data).hexdigest()  # replaced together, on purpose
    manifest["shards"][-1] = None  # and a shard left to compute, so the run resumes
    (done.path / "manifest.json").write_text(json.dumps(manifest))
    assert load_fitted(FeatureSet(done.path)) is None and not marker.exists()
    again = extract_to_store(catalog, ["tfidf:min_df=1"], (), tmp_path / "store", shard_rows=5)[0]
    assert again.shards_written == 4 and again.shards_reused == 0  # refitted: every shard again
    assert not marker.exists()
    ids, matrix = FeatureSet(again.path).read()
    assert (load_fitted(FeatureSet(again.path)).transform(catalog.texts()) != matrix).nnz == 0


def test_a_set_written_with_a_pickled_fit_is_refitted_without_unpickling(tiny_catalog, tmp_path, monkeypatch):
    catalog = load_catalog(tiny_catalog)
    done = extract_to_store(catalog, ["tfidf:min_df=1"], (), tmp_path / "store", shard_rows=5)[0]
    marker = tmp_path / "code-ran"
    data = pickle.dumps(_Marker(marker))
    (done.path / "fitted.pkl").write_bytes(data)  # how a set kept its fit before skops
    (done.path / FITTED_FILE).unlink()
    manifest = json.loads((done.path / "manifest.json").read_text())
    manifest["fit"] = {k: v for k, v in manifest["fit"].items() if k not in ("file", "sha256")}
    manifest["fit"]["sha256"] = hashlib.sha256(data).hexdigest()
    manifest["shards"][0] = None
    (done.path / "manifest.json").write_text(json.dumps(manifest))
    _no_unpickling(monkeypatch)
    again = extract_to_store(catalog, ["tfidf:min_df=1"], (), tmp_path / "store", shard_rows=5)[0]
    assert again.shards_written == 4 and not marker.exists()
    assert not (again.path / "fitted.pkl").exists() and (again.path / FITTED_FILE).is_file()
    assert len(FeatureStore(tmp_path / "store").sets()) == 1


class _Marker:
    """Unpickling this creates a file: proof that loading ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))
