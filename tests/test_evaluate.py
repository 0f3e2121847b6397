"""The evaluator and its report files, on a small generated catalogue."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse
from click.testing import CliRunner

from placedemarche.cli.main import cli
from placedemarche.features.cache import FeatureCache
from placedemarche.data.catalog import load_catalog
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.evaluate.evaluator import EvaluationConfig, evaluate_combinations
from placedemarche.report.evaluation import write_evaluation_report
from placedemarche.evaluate.fusion import scale_rows
from placedemarche.evaluate.metrics import matched_confusion, score_clustering

from helpers import MeanColour

FAST = EvaluationConfig(seeds=(0, 1), perplexity=5.0, reducer="pca:n_components=10")


def test_text_image_and_fused_runs_are_scored_and_written(tiny_catalog, tmp_path, mean_colour):
    catalog = load_catalog(tiny_catalog).validated()
    out = tmp_path / "out"
    report = evaluate_combinations(catalog, text=["tfidf:min_df=1"], image=["mean-colour"],
                                   config=FAST, cache=FeatureCache(tmp_path / "c"))
    write_evaluation_report(report, out)
    names = [r.name for r in report.runs]
    assert sorted(names) == sorted(["tfidf:min_df=1", "mean-colour", "tfidf:min_df=1 + mean-colour"])
    for run in report.runs:
        assert set(run.spaces) == {"raw", "reduced", "tsne"}
        for space in run.spaces.values():
            assert len(space.per_seed) == 2
            assert np.array(space.confusion).sum() == len(catalog)
    # categories are separable on both modalities in the generated data: a plumbing check (the
    # scores reach the report), not a quality claim; quality is checked on Flipkart (slow tests)
    best = report.runs[0]
    assert best.mean("ari") > 0.8
    assert report.runs == sorted(report.runs, key=lambda r: -r.mean("ari"))
    data = json.loads((out / "results.json").read_text())
    assert data["catalog"]["products"] == 18 and data["config"]["seeds"] == [0, 1]
    assert data["runs"][0]["spaces"]["tsne"]["ari_mean"] == pytest.approx(best.mean("ari"), abs=1e-4)
    csv_lines = (out / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 3 * 3
    for run in data["runs"]:
        for plot in run["plots"].values():
            assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "ari_by_run.png").is_file()


def test_features_reused_from_cache(tiny_catalog, tmp_path):
    catalog = load_catalog(tiny_catalog).validated(image=False)
    cache = FeatureCache(tmp_path / "c")
    config = EvaluationConfig(seeds=(0,), cluster_on=("raw",))
    first = evaluate_combinations(catalog, text=["bow:min_df=1"], config=config, cache=cache)
    second = evaluate_combinations(catalog, text=["bow:min_df=1"], config=config, cache=cache)
    assert not first.runs[0].features["bow:min_df=1"]["cached"]
    assert second.runs[0].features["bow:min_df=1"]["cached"]
    assert first.runs[0].mean("ari", "raw") == second.runs[0].mean("ari", "raw")


def test_sparse_features_are_never_standard_scaled():
    X = scipy.sparse.random(20, 50, density=0.2, format="csr", random_state=0)
    scaled = scale_rows(X, "standard")
    assert scipy.sparse.issparse(scaled)
    assert np.allclose(np.sqrt(scaled.multiply(scaled).sum(axis=1)).A1[np.diff(X.indptr) > 0], 1.0)


def test_clear_errors(tiny_catalog):
    catalog = load_catalog(tiny_catalog)
    with pytest.raises(PlaceDeMarcheError, match="nothing to evaluate"):
        evaluate_combinations(catalog)
    with pytest.raises(PlaceDeMarcheError, match="unknown clustering space"):
        evaluate_combinations(catalog, text=["tfidf"], config=EvaluationConfig(cluster_on=("umap",)))
    unlabelled = catalog.subset(range(len(catalog)))
    unlabelled.labels = None
    with pytest.raises(PlaceDeMarcheError, match="no category column"):
        evaluate_combinations(unlabelled, text=["tfidf"])


def test_hungarian_matching_ignores_cluster_numbering():
    true = [0, 0, 1, 1, 2, 2]
    pred = [2, 2, 0, 0, 1, 1]
    scores = score_clustering(true, pred)
    assert scores["ari"] == pytest.approx(1.0) and scores["matched_accuracy"] == 1.0
    assert np.array_equal(matched_confusion(true, pred, 3, 3), np.diag([2, 2, 2]))
    half = score_clustering([0, 0, 1, 1], [0, 1, 0, 1])
    assert half["matched_accuracy"] == 0.5 and half["ari"] < 0.01


def test_cli_evaluate_prints_a_ranked_table_and_writes_files(tiny_catalog, tmp_path):
    out = tmp_path / "res"
    result = CliRunner().invoke(cli, [
        "evaluate", "--data", str(tiny_catalog), "--text", "tfidf:min_df=1", "--text", "bow:min_df=1",
        "--seeds", "2", "--perplexity", "5", "--reducer", "pca:n_components=10", "--out", str(out),
        "--tsne-input", "features", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "ARI tsne" in result.output and "tfidf:min_df=1" in result.output
    assert "18 products, 3 categories" in result.output
    data = json.loads((out / "results.json").read_text())
    assert data["catalog"]["text_field"] == "both" and data["config"]["tsne_input"] == "features"
    assert {run["tsne_input"] for run in data["runs"]} == {"features"}  # forced, even for sparse TF-IDF


def test_cli_evaluate_unknown_plugin_is_one_line(tiny_catalog, tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(tiny_catalog), "--text", "tfidff",
                                      "--out", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 1
    assert "error: unknown text extractor 'tfidff': did you mean 'tfidf'?" in result.output
    assert "Traceback" not in result.output


def test_cli_evaluate_on_missing_fail_names_rows(tiny_catalog, tmp_path, mean_colour):
    (tiny_catalog.parent / "images" / "wat002.jpg").unlink()
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", "--data", str(tiny_catalog), "--image", "mean-colour",
                                 "--on-missing", "fail", "--no-progress", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "row wat002 (line 4): image file not found" in result.output


def test_tsne_embeds_dense_features_directly_and_sparse_ones_reduced(tiny_catalog, mean_colour, monkeypatch):
    from sklearn.preprocessing import normalize

    import placedemarche.evaluate.evaluator as evaluate_module

    seen = []
    real_tsne = evaluate_module._tsne
    monkeypatch.setattr(evaluate_module, "_tsne", lambda X, seed, p: seen.append(X) or real_tsne(X, seed, p))
    catalog = load_catalog(tiny_catalog).validated()
    # n_jobs=1: in this process, where the spy on _tsne is installed
    config = EvaluationConfig(seeds=(0,), perplexity=5.0, reducer="pca:n_components=2", cluster_on=("tsne",),
                              n_jobs=1)

    def tsne_input_of(text=(), image=(), **changes):
        seen.clear()
        report = evaluate_combinations(catalog, text, image, config=EvaluationConfig(**{**config.__dict__, **changes}))
        (run,) = [r for r in report.runs if r.text == (text[0] if text else None)
                  and r.image == (image[0] if image else None)]
        return run.tsne_input, seen[-1]

    # dense image features: t-SNE sees the L2-scaled features themselves, not the 2-D PCA
    used, X = tsne_input_of(image=["mean-colour"])
    assert used == "features"
    np.testing.assert_allclose(X, normalize(MeanColour().transform(catalog.image_paths)), atol=1e-5)
    # a sparse block (TF-IDF), alone or fused with a dense one: t-SNE sees the reduced space
    for text, image in ((["tfidf:min_df=1"], ()), (["tfidf:min_df=1"], ["mean-colour"])):
        used, X = tsne_input_of(text, image)
        assert used == "reduced" and X.shape[1] <= 4 and not scipy.sparse.issparse(X)
    # asked explicitly, the dense block is reduced first
    used, X = tsne_input_of(image=["mean-colour"], tsne_input="reduced")
    assert used == "reduced" and X.shape == (len(catalog), 2)
    with pytest.raises(PlaceDeMarcheError, match="unknown t-SNE input 'pca'"):
        evaluate_combinations(catalog, image=["mean-colour"], config=EvaluationConfig(tsne_input="pca"))
