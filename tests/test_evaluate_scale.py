"""The evaluator past its size threshold: approximations kick in, are recorded and printed,
stay close to the exact results, never densify sparse features, and keep report.html small.

The threshold and sample size are lowered (module constants or CLI options) so generated
catalogues of a few hundred products exercise the large-catalogue path in seconds."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import scipy.sparse
from click.testing import CliRunner

import placedemarche.core.limits as limits
import placedemarche.evaluate.scale as scale
from placedemarche.cli.main import cli
from placedemarche.core import plugins
from placedemarche.data.catalog import load_catalog
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.evaluate.evaluator import EvaluationConfig, evaluate_combinations
from placedemarche.report.evaluation import write_evaluation_report
from placedemarche.evaluate.metrics import score_clustering

from helpers import CATEGORY_WORDS

NOISE_WORDS = "great new offer quality price online buy best brand genuine product free".split()
FAST = dict(perplexity=5.0, reducer="pca:n_components=10", seeds=(0,))
TFIDF = "tfidf:normalise=none"  # no NLTK lemmatiser: fast, and the same on every machine


def write_catalogue(path, per_category: int, seed: int = 0):
    """Products of three categories: a few words of their category's vocabulary mixed with
    shared noise words (so the categories overlap a little) and a unique model code."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uniq_id", "product_name", "description", "category"])
        for category, words in CATEGORY_WORDS.items():
            words = words.split()
            for j in range(per_category):
                own = rng.choice(words, size=4)
                noise = rng.choice(NOISE_WORDS + words, size=4)
                writer.writerow([f"{category[:3]}{j}", f"{' '.join(own[:2])} m{rng.integers(10**6)}",
                                 " ".join([*own, *noise]), category])
    return path


@pytest.fixture
def catalogue_csv(tmp_path):
    return write_catalogue(tmp_path / "catalogue.csv", per_category=150)  # 450 products


@pytest.fixture
def low_threshold(monkeypatch):
    """Approximate past 200 products, on a sample of 150."""
    monkeypatch.setattr(scale, "APPROXIMATE_ABOVE", 200)
    monkeypatch.setattr(scale, "SAMPLE_SIZE", 150)


@pytest.fixture
def no_densifying(monkeypatch):
    """Every scipy sparse class's toarray/todense raises on more than a few rows: densifying
    the features (or the sample) anywhere fails the test. A few rows may be densified: k-means++
    densifies the rows it picks as centroids."""
    def guarded(real):
        def refuse(self, *args, **kwargs):
            if self.shape[0] > 10:
                raise AssertionError(f"a {type(self).__name__} {self.shape} was densified")
            return real(self, *args, **kwargs)
        return refuse

    classes, todo = set(), [scipy.sparse._base._spbase]
    while todo:
        cls = todo.pop()
        classes.add(cls)
        todo.extend(cls.__subclasses__())
    for cls in classes:
        for name in ("toarray", "todense"):
            if name in vars(cls):
                monkeypatch.setattr(cls, name, guarded(vars(cls)[name]))


def test_stratified_sample_keeps_each_category_share():
    y = np.repeat([0, 1, 2], [600, 300, 100])
    sample = scale.stratified_sample(y, 100, seed=0)
    assert len(sample) == 100 and len(np.unique(sample)) == 100 and np.all(np.diff(sample) > 0)
    assert np.bincount(y[sample]).tolist() == [60, 30, 10]
    assert np.array_equal(sample, scale.stratified_sample(y, 100, seed=0))  # seeded
    rare = scale.stratified_sample(np.array([0] * 995 + [1] * 5), 50)
    assert 1 in np.array([0] * 995 + [1] * 5)[rare]  # a small category is never sampled away


def test_plan_is_exact_up_to_the_threshold():
    y = np.repeat([0, 1], 150)
    assert not scale.plan_for(y, approximate_above=300).active
    plan = scale.plan_for(y, approximate_above=299, sample_size=100)
    assert plan.active and len(plan.sample) == 100 and plan.describe()["approximated"]


def test_sampled_silhouette_is_close_to_the_exact_one():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 500)
    X = rng.normal(0, 3, (4, 20))[y] + rng.normal(0, 2.5, (2000, 20))
    pred = np.where(rng.random(2000) < 0.1, (y + 1) % 4, y)  # 10 % wrong
    exact = score_clustering(y, pred, X)
    sampled = score_clustering(y, pred, X, sample=scale.stratified_sample(y, 400))
    assert 0.05 < exact["silhouette"] < 0.9
    assert sampled["silhouette"] == pytest.approx(exact["silhouette"], abs=0.03)
    assert {k: v for k, v in sampled.items() if k != "silhouette"} == \
        {k: v for k, v in exact.items() if k != "silhouette"}  # the other scores use every product


def test_past_the_threshold_approximations_are_printed_recorded_and_close_to_exact(catalogue_csv, tmp_path):
    def evaluate(out, *options):
        result = CliRunner().invoke(cli, [
            "evaluate", "--data", str(catalogue_csv), "--text", TFIDF, "--seeds", "1", "--perplexity", "5",
            "--reducer", "pca:n_components=10", "--jobs", "1", "--out", str(out), "--no-progress", *options])
        assert result.exit_code == 0, result.output
        return result.output, json.loads((out / "results.json").read_text())

    output, approx = evaluate(tmp_path / "approx", "--approximate-above", "200", "--sample-size", "150")
    _, exact = evaluate(tmp_path / "exact", "--cluster-on", "raw", "--cluster-on", "reduced")
    notes = approx["approximations"]
    assert set(notes) == {"clusterer kmeans", "silhouette", "map", "plots"}
    assert "KMeans restarts (n_init 10) on a random sample" in notes["clusterer kmeans"] and "150 of 450" in notes["silhouette"]
    for what, how in notes.items():  # one terminal line each
        assert f"Approximated {what}: {how}" in output.splitlines()
    assert approx["scale"] == {"products": 450, "approximate_above": 200, "sample_size": 150, "approximated": True}
    assert exact["approximations"] == {} and exact["scale"]["approximated"] is False
    for space in ("raw", "reduced"):
        a, e = approx["runs"][0]["spaces"][space], exact["runs"][0]["spaces"][space]
        assert e["ari_mean"] > 0.3  # the categories are there to be found
        assert a["ari_mean"] == pytest.approx(e["ari_mean"], abs=0.1)  # mini-batch vs full k-means
        assert a["silhouette_mean"] == pytest.approx(e["silhouette_mean"], abs=0.05)
    assert approx["runs"][0]["spaces"]["tsne"]["ari_mean"] > 0.3  # the placed map still separates them
    with open(tmp_path / "approx" / "assignments.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 450 * 3 and all(row["tsne_x"] for row in rows)  # every product, placed on the map


def test_report_html_embeds_at_most_the_sample(catalogue_csv, tmp_path, low_threshold):
    catalog = load_catalog(catalogue_csv).validated(image=False)
    report = evaluate_combinations(catalog, text=[TFIDF],
                                   config=EvaluationConfig(cluster_on=("reduced",), n_jobs=1, **FAST))
    write_evaluation_report(report, tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text()
    data = json.loads(re.search(r"const DATA = (\{.*?\});</script>", page, re.S).group(1))
    figures = json.loads(re.search(r"const FIGURES = (\{.*?\});\nconst TEMPLATE", page, re.S).group(1))
    assert len(data["products"]["names"]) == 150 and len(data["runs"]["0"]["clusters"]) == 150
    points = sum(len(trace["customdata"]) for trace in figures["map-0"]["data"])  # x, y: typed arrays
    assert points == 2 * 150  # two panels of the sample, not of the 450 products
    assert all(i < 150 for trace in figures["map-0"]["data"] for i in trace["customdata"])
    assert "approximated: silhouette" in page and "150 sampled of 450 products" in page
    assert len(report.runs[0].map_xy) == 450  # the map itself covers every product


def test_sparse_features_are_never_densified_on_the_default_path(catalogue_csv, tmp_path, low_threshold,
                                                                  no_densifying):
    catalog = load_catalog(catalogue_csv).validated(image=False)
    with pytest.raises(AssertionError, match="densified"):  # the guard works
        scipy.sparse.random(30, 3, format="csr").toarray()
    report = evaluate_combinations(catalog, text=[TFIDF],
                                   config=EvaluationConfig(n_jobs=1, **FAST))  # raw, reduced and tsne
    write_evaluation_report(report, tmp_path / "out")
    assert report.approximations and report.runs[0].mean("ari", "raw") > 0.3


def test_a_sparse_raw_space_too_big_to_densify_is_refused_in_one_line(catalogue_csv, monkeypatch):
    monkeypatch.setattr(limits, "DENSE_LIMIT_BYTES", 1000)
    catalog = load_catalog(catalogue_csv).validated(image=False)
    with pytest.raises(PlaceDeMarcheError, match=r"clusterer gmm takes no sparse input.*--cluster-on reduced") as err:
        evaluate_combinations(catalog, text=[TFIDF], config=EvaluationConfig(
            cluster_on=("raw",), clusterers=("gmm",), n_jobs=1, **FAST))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["agglomerative", "spectral"])
def test_quadratic_clusterers_refuse_huge_inputs_naming_kmeans(name):
    X = np.random.default_rng(0).normal(size=(61, 3))
    clusterer = plugins.create_plugin("clusterer", f"{name}:max_rows=60", n_clusters=2)
    with pytest.raises(PlaceDeMarcheError, match="use kmeans") as err:
        clusterer.fit_predict(X)
    assert "\n" not in str(err.value) and "61 rows" in str(err.value)
    assert len(plugins.create_plugin("clusterer", f"{name}:max_rows=61", n_clusters=2).fit_predict(X)) == 61
