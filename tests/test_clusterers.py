"""Clusterer plugins: the built-ins, how the evaluator runs several of them on one t-SNE map,
how noise (label -1) is scored and reported, sparse input, and `pm evaluate --clusterer`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

import placedemarche.evaluate.evaluator as evaluate_module
from placedemarche import Clusterer, hookimpl
from placedemarche.cli.main import cli
from placedemarche.core import plugins
from placedemarche.data.catalog import load_catalog
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.evaluate.evaluator import EvaluationConfig, evaluate_combinations
from placedemarche.report.evaluation import write_evaluation_report
from placedemarche.evaluate.metrics import contingency, matched_confusion, noise_counts, score_clustering

from helpers import make_catalog

FAST = dict(perplexity=5.0, reducer="pca:n_components=10")
BUILT_INS = ("kmeans", "agglomerative", "gmm", "spectral", "hdbscan")


@pytest.fixture(scope="module")
def blobs():
    """Three well-separated groups of 20 points in 12 dimensions, and their true groups."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (3, 12))
    y = np.repeat(np.arange(3), 20)
    return (centres[y] + rng.normal(0, 0.5, (60, 12))).astype(np.float32), y


@pytest.fixture
def catalog_csv(tmp_path):
    """12 products per category: enough for HDBSCAN's smallest cluster (5) to mean something."""
    return make_catalog(tmp_path / "cat", per_category=12)


@pytest.fixture
def catalog(catalog_csv):
    return load_catalog(catalog_csv).validated(image=False)


@pytest.fixture
def tsne_calls(monkeypatch):
    """Count t-SNE fits made in this process (run with n_jobs=1 so none escape to workers)."""
    calls = []
    real = evaluate_module._tsne
    monkeypatch.setattr(evaluate_module, "_tsne", lambda X, seed, p: calls.append(seed) or real(X, seed, p))
    return calls


class _EveryFifthIsNoise(Clusterer):
    """Clusters by the first column's sign, and calls every fifth product noise."""

    name = "fifth-noise"
    description = "test clusterer that leaves products out"
    needs_n_clusters = False

    def fit_predict(self, X, y=None):
        labels = (np.asarray(X)[:, 0] > np.median(np.asarray(X)[:, 0])).astype(np.int64)
        labels[::5] = -1
        return labels


class _DenseOnly(Clusterer):
    """Records what it was given; declares no sparse support."""

    name = "dense-only"
    description = "test clusterer that needs a dense array"
    seen: list = []

    def __init__(self, n_clusters: int = 8):
        self.n_clusters = n_clusters

    def fit_predict(self, X, y=None):
        import scipy.sparse

        type(self).seen.append(scipy.sparse.issparse(X))
        return np.arange(X.shape[0]) % self.n_clusters


class _ClustererPlugin:
    @hookimpl
    def register_clusterers(register):
        register(_EveryFifthIsNoise)
        register(_DenseOnly)


@pytest.fixture
def noisy_clusterers():
    name = plugins.register_plugin(_ClustererPlugin, name="test-clusterers", provider="tests")
    _DenseOnly.seen = []
    yield
    plugins.unregister_plugin(name)


# -- the built-ins -----------------------------------------------------------------------
def test_every_built_in_clusterer_is_registered_and_instant_to_list():
    found = plugins.available_plugins("clusterer")
    assert set(BUILT_INS) <= set(found)
    assert all(found[name].provider == "placedemarche" for name in BUILT_INS)
    assert found["hdbscan"].cls.needs_n_clusters is False
    assert all(found[name].cls.needs_n_clusters for name in BUILT_INS if name != "hdbscan")


@pytest.mark.parametrize("name", BUILT_INS)
def test_built_in_clusterer_finds_well_separated_groups(name, blobs):
    from sklearn.metrics import adjusted_rand_score

    X, y = blobs
    params = {} if name == "hdbscan" else {"n_clusters": 3}
    labels = plugins.create_plugin("clusterer", name, **params).fit_predict(X)
    assert labels.shape == (60,)
    assert adjusted_rand_score(y, labels) == pytest.approx(1.0)


def test_kmeans_is_sklearn_kmeans_with_ten_restarts_and_cheaper_past_its_limit(blobs):
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import adjusted_rand_score

    X, y = blobs
    for seed in (0, 1, 7):
        plugin = plugins.create_plugin("clusterer", "kmeans", n_clusters=4, random_state=seed)
        expected = KMeans(n_clusters=4, n_init=10, random_state=seed).fit_predict(X)
        np.testing.assert_array_equal(plugin.fit_predict(X), expected)
        assert type(plugin.model_) is KMeans and plugin.approximation(len(X)) is None
    # past the limit, by default: the restarts on a sample, then one run on every row from there
    sampled = plugins.create_plugin("clusterer", "kmeans:minibatch_above=50,sample_rows=30", n_clusters=3)
    labels = sampled.fit_predict(X)
    assert sampled.model_.n_init == 1 and not isinstance(sampled.model_.init, str)
    rows = np.sort(np.random.default_rng(0).choice(len(X), size=30, replace=False))
    start = KMeans(n_clusters=3, n_init=10, random_state=0).fit(X[rows]).cluster_centers_
    np.testing.assert_allclose(sampled.model_.init, start)
    assert adjusted_rand_score(y, labels) == pytest.approx(1.0)
    assert "sample of 30 rows" in sampled.approximation(len(X))
    minibatch = plugins.create_plugin("clusterer", "kmeans:minibatch_above=50,large=minibatch", n_clusters=3)
    minibatch.fit_predict(X)
    assert type(minibatch.model_) is MiniBatchKMeans and "MiniBatchKMeans" in minibatch.approximation(len(X))
    exact = plugins.create_plugin("clusterer", "kmeans:minibatch_above=50,large=exact", n_clusters=4)
    np.testing.assert_array_equal(exact.fit_predict(X), KMeans(n_clusters=4, n_init=10, random_state=0).fit_predict(X))
    with pytest.raises(PlaceDeMarcheError, match="large='fast' is not one of sample-init, minibatch, exact"):
        plugins.create_plugin("clusterer", "kmeans:minibatch_above=50,large=fast", n_clusters=3).fit_predict(X)


def test_evaluator_kmeans_gives_the_same_clusters_as_before_the_plugin(catalog):
    """The default clusterer is KMeans(k, n_init=10, random_state=seed) on each space, so
    earlier figures are reproduced exactly; default run names do not name the clusterer."""
    from sklearn.cluster import KMeans

    config = EvaluationConfig(seeds=(0, 1), cluster_on=("tsne",), n_jobs=1, **FAST)
    report = evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=config)
    run = report.runs[0]
    assert run.name == "tfidf:min_df=1" and run.clusterer == "kmeans"
    for seed in (0, 1):
        expected = KMeans(n_clusters=3, n_init=10, random_state=seed).fit_predict(run.embeddings[seed])
        np.testing.assert_array_equal(run.assignments["tsne"][seed], expected)


def test_hdbscan_labels_isolated_points_as_noise(blobs):
    X, _ = blobs
    outliers = np.array([[200.0] * 12, [-200.0] * 12, [0.0] * 11 + [300.0]], dtype=np.float32)
    labels = plugins.create_plugin("clusterer", "hdbscan").fit_predict(np.vstack([X, outliers]))
    assert list(labels[-3:]) == [-1, -1, -1]
    assert len(set(labels[:60].tolist())) == 3


# -- noise in the scores -----------------------------------------------------------------
def test_noise_is_never_rewarded_by_the_scores():
    from sklearn import metrics

    true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 0, -1, 1, 1, 1, -1, 2, 2, -1, -1])
    scores = score_clustering(true, pred)
    # noise: each product its own singleton cluster for ARI / NMI
    singletons = np.array([0, 0, 0, 3, 1, 1, 1, 4, 2, 2, 5, 6])
    assert scores["ari"] == pytest.approx(metrics.adjusted_rand_score(true, singletons))
    assert scores["nmi"] == pytest.approx(metrics.normalized_mutual_info_score(true, singletons))
    # ... and never matched to a category: wrong for matched accuracy, over all products
    assert scores["matched_accuracy"] == pytest.approx(8 / 12)
    assert scores["noise"] == pytest.approx(4 / 12)
    # the same products put in their right cluster score better on every metric
    perfect = score_clustering(true, true)
    assert all(perfect[m] > scores[m] for m in ("ari", "nmi", "matched_accuracy"))
    assert perfect["noise"] == 0.0
    # everything noise: nothing is matched, nothing agrees
    all_noise = score_clustering(true, np.full(12, -1))
    assert all_noise["matched_accuracy"] == 0.0 and all_noise["ari"] == pytest.approx(0.0)
    assert all_noise["noise"] == 1.0


def test_noise_is_left_out_of_the_silhouette_and_the_confusion_matrix():
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(0, 1, (10, 2)), rng.normal(8, 1, (10, 2))])
    true = np.repeat([0, 1], 10)
    pred = true.copy()
    pred[[0, 15]] = -1
    kept = pred >= 0
    assert score_clustering(true, pred, X)["silhouette"] == pytest.approx(
        silhouette_score(X[kept], pred[kept], random_state=0))
    assert contingency(true, pred, 2, 2).sum() == 18
    assert matched_confusion(true, pred, 2, 2).tolist() == [[9, 0], [0, 9]]
    assert noise_counts(true, pred, 2).tolist() == [1, 1]


def test_noise_is_reported_per_seed_in_json_csv_table_and_plots(catalog, tmp_path, noisy_clusterers):
    out = tmp_path / "out"
    config = EvaluationConfig(seeds=(0, 1), cluster_on=("reduced", "tsne"), n_jobs=1,
                              clusterers=("kmeans", "fifth-noise"), **FAST)
    report = evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=config)
    write_evaluation_report(report, out)
    noisy = next(r for r in report.runs if r.clusterer == "fifth-noise")
    assert noisy.name == "tfidf:min_df=1 / fifth-noise"
    assert noisy.mean("noise") == pytest.approx(8 / 36)  # rows 0, 5, ..., 35 of 36

    data = json.loads((out / "results.json").read_text())
    assert data["config"]["clusterers"] == ["kmeans", "fifth-noise"]
    runs = {r["name"]: r for r in data["runs"]}
    space = runs["tfidf:min_df=1 / fifth-noise"]["spaces"]["tsne"]
    assert space["noise_mean"] == pytest.approx(8 / 36, abs=1e-4)
    assert [s["noise"] for s in space["per_seed"]] == [pytest.approx(8 / 36, abs=1e-4)] * 2
    assert sum(space["confusion_noise"]) == 8
    assert np.array(space["confusion_matrix"]).sum() == 36 - 8
    assert runs["tfidf:min_df=1 / kmeans"]["spaces"]["tsne"]["noise_mean"] == 0.0
    assert "confusion_noise" not in runs["tfidf:min_df=1 / kmeans"]["spaces"]["tsne"]
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["clusterer"], r["space"]) for r in rows} == {
        (c, s) for c in ("kmeans", "fifth-noise") for s in ("reduced", "tsne")}
    assert {r["noise_mean"] for r in rows if r["clusterer"] == "fifth-noise"} == {"0.2222"}
    for run in data["runs"]:
        for plot in run["plots"].values():
            assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "noise (in no cluster)" in page and "fifth-noise on tsne" in page

    from placedemarche.cli.evaluate_cmd import results_table
    from placedemarche.cli.render import console

    with console.capture() as captured:
        console.print(results_table(report))
    assert "noise tsne" in captured.get() and "fifth-noise" in captured.get()
    with console.capture() as captured:
        console.print(results_table(evaluate_combinations(
            catalog, text=["tfidf:min_df=1"], config=EvaluationConfig(seeds=(0,), cluster_on=("reduced",),
                                                                      n_jobs=1, **FAST))))
    assert "noise" not in captured.get()


# -- several clusterers in one evaluation ------------------------------------------------
def test_several_clusterers_share_one_tsne_map_per_combination_and_seed(catalog_csv, tsne_calls, mean_colour):
    catalog = load_catalog(catalog_csv).validated()
    config = EvaluationConfig(seeds=(0, 1), cluster_on=("reduced", "tsne"), n_jobs=1,
                              clusterers=("kmeans", "agglomerative", "gmm"), **FAST)
    report = evaluate_combinations(catalog, text=["tfidf:min_df=1"], image=["mean-colour"], config=config)
    # 3 combinations (text, image, fusion) x 2 seeds: 6 maps, whatever the number of clusterers
    assert sorted(tsne_calls) == [0, 0, 0, 1, 1, 1]
    assert len(report.runs) == 3 * 3
    names = {r.name for r in report.runs}
    assert "tfidf:min_df=1 + mean-colour / agglomerative" in names
    by_combination = {}
    for run in report.runs:
        by_combination.setdefault((run.text, run.image), []).append(run)
    for runs in by_combination.values():
        assert {r.clusterer for r in runs} == {"kmeans", "agglomerative", "gmm"}
        for seed in (0, 1):
            assert all(r.embeddings[seed] is runs[0].embeddings[seed] for r in runs)

    # without a t-SNE space, the map drawn is still one per combination
    tsne_calls.clear()
    config = EvaluationConfig(seeds=(0, 1), cluster_on=("reduced",), n_jobs=1,
                              clusterers=("kmeans", "agglomerative"), **FAST)
    evaluate_combinations(catalog, text=["tfidf:min_df=1"], image=["mean-colour"], config=config)
    assert tsne_calls == [0, 0, 0]


def test_parallel_jobs_run_every_clusterer_alike(catalog):
    results = {}
    for jobs in (1, 2):
        config = EvaluationConfig(seeds=(0, 1), cluster_on=("reduced", "tsne"), n_jobs=jobs,
                                  clusterers=("kmeans", "hdbscan:min_cluster_size=4"), **FAST)
        report = evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=config)
        results[jobs] = {(r.name, s, seed): r.assignments[s][seed].tolist()
                         for r in report.runs for s in r.spaces for seed in (0, 1)}
    assert results[1] == results[2]
    assert {name for name, _, _ in results[1]} == {"tfidf:min_df=1 / kmeans",
                                                   "tfidf:min_df=1 / hdbscan:min_cluster_size=4"}


def test_dense_only_clusterers_get_the_sparse_raw_space_densified(catalog, noisy_clusterers):
    config = EvaluationConfig(seeds=(0,), cluster_on=("raw",), n_jobs=1,
                              clusterers=("dense-only", "kmeans"), **FAST)
    report = evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=config)
    assert _DenseOnly.seen == [False]
    # n_clusters comes from the categories unless the spec says otherwise
    dense = next(r for r in report.runs if r.clusterer == "dense-only")
    assert set(dense.assignments["raw"][0].tolist()) == {0, 1, 2}
    config = EvaluationConfig(seeds=(0,), cluster_on=("raw",), n_jobs=1, clusterers=("dense-only:n_clusters=2",))
    report = evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=config)
    assert set(report.runs[0].assignments["raw"][0].tolist()) == {0, 1}


# -- the command line --------------------------------------------------------------------
def test_cli_clusterer_is_repeatable(catalog_csv, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "evaluate", "--data", str(catalog_csv), "--text", "tfidf:min_df=1", "--clusterer", "kmeans",
        "--clusterer", "agglomerative", "--cluster-on", "reduced", "--seeds", "1", "--jobs", "1",
        "--reducer", "pca:n_components=10", "--perplexity", "5", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "kmeans, agglomerative" in result.output
    data = json.loads((out / "results.json").read_text())
    assert {(r["name"], r["clusterer"]) for r in data["runs"]} == {
        ("tfidf:min_df=1 / kmeans", "kmeans"), ("tfidf:min_df=1 / agglomerative", "agglomerative")}
    assert data["config"]["clusterers"] == ["kmeans", "agglomerative"]


def test_cli_reports_an_unknown_clusterer_before_any_work(catalog_csv, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "evaluate", "--data", str(catalog_csv), "--text", "tfidf", "--clusterer", "kmean",
        "--clusterer", "gmm:covariance=full", "--out", str(out)])
    assert result.exit_code != 0
    assert "unknown clusterer 'kmean': did you mean 'kmeans'?" in result.output
    assert "plugin 'gmm' has no parameter 'covariance'" in result.output  # all problems at once
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_example_package_clusterer_runs_in_pm_evaluate(catalog_csv, tmp_path):
    if "quantile-bins" not in plugins.available_plugins("clusterer"):
        pytest.fail("install the example plugin: pip install ./examples/placedemarche-colour-histogram")
    assert plugins.available_plugins("clusterer")["quantile-bins"].provider == "placedemarche-colour-histogram"
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "evaluate", "--data", str(catalog_csv), "--image", "colour-histogram", "--clusterer", "quantile-bins",
        "--cluster-on", "reduced", "--seeds", "2", "--reducer", "pca:n_components=5", "--perplexity", "5",
        "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    (run,) = data["runs"]
    assert run["name"] == "colour-histogram / quantile-bins" and run["clusterer"] == "quantile-bins"
    space = run["spaces"]["reduced"]
    # equal-count bins: 12 products in each of the 3 clusters; deterministic over seeds
    assert np.array(space["confusion_matrix"]).sum(axis=0).tolist() == [12, 12, 12]
    assert space["per_seed"][0]["ari"] == space["per_seed"][1]["ari"]
