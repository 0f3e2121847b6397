"""The evaluator's clustering phase: cached t-SNE maps, parallel jobs, per-product
assignments, what the plots and tables say, and the Python API's entry checks."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import placedemarche.evaluate.evaluator as evaluate_module
from placedemarche.cli.main import cli
from placedemarche.features.cache import FeatureCache
from placedemarche.data.catalog import load_catalog
from placedemarche.evaluate.evaluator import EvaluationConfig, evaluate_combinations
from placedemarche.report.evaluation import write_evaluation_report
from placedemarche.core.progress import reporting


FAST = dict(perplexity=5.0, reducer="pca:n_components=10")


@pytest.fixture
def tsne_calls(monkeypatch):
    """Count t-SNE fits made in this process (run with n_jobs=1 so none escape to workers)."""
    calls = []
    real = evaluate_module._tsne
    monkeypatch.setattr(evaluate_module, "_tsne", lambda X, seed, p: calls.append(seed) or real(X, seed, p))
    return calls


def test_tsne_maps_are_cached_so_changing_the_clusterer_does_not_recompute_them(tiny_catalog, tmp_path, tsne_calls):
    catalog = load_catalog(tiny_catalog).validated(image=False)
    cache = FeatureCache(tmp_path / "cache")
    config = EvaluationConfig(seeds=(0, 1), cluster_on=("tsne",), n_jobs=1, **FAST)
    first = evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=config, cache=cache)
    assert sorted(tsne_calls) == [0, 1] and first.runs[0].tsne_cached == 0

    tsne_calls.clear()
    other_k = EvaluationConfig(seeds=(0, 1), cluster_on=("tsne",), n_clusters=4, n_jobs=1, **FAST)
    again = evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=other_k, cache=cache)
    assert tsne_calls == [] and again.runs[0].tsne_cached == 2
    for seed in (0, 1):
        np.testing.assert_array_equal(again.runs[0].embeddings[seed], first.runs[0].embeddings[seed])
    assert int(again.runs[0].assignments["tsne"][0].max()) + 1 == 4

    # another perplexity or another seed is another map
    tsne_calls.clear()
    evaluate_combinations(catalog, text=["tfidf:min_df=1"], cache=cache,
                          config=EvaluationConfig(seeds=(0, 2), cluster_on=("tsne",), n_jobs=1,
                                                  perplexity=4.0, reducer=FAST["reducer"]))
    assert sorted(tsne_calls) == [0, 2]
    # without a cache nothing is reused
    tsne_calls.clear()
    evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=config)
    assert sorted(tsne_calls) == [0, 1]


def test_an_identical_rerun_reuses_the_clusterings_and_gives_the_same_scores(tiny_catalog, tmp_path, monkeypatch):
    catalog = load_catalog(tiny_catalog).validated(image=False)
    cache = FeatureCache(tmp_path / "cache")
    calls = []
    real = evaluate_module._cluster
    monkeypatch.setattr(evaluate_module, "_cluster", lambda plan, X, seed: calls.append(seed) or real(plan, X, seed))
    config = EvaluationConfig(seeds=(0, 1), n_jobs=1, **FAST)
    first = evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=config, cache=cache)
    assert len(calls) == 2 * 3  # seeds x spaces
    calls.clear()
    again = evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=config, cache=cache)
    assert calls == []
    for space in ("raw", "reduced", "tsne"):
        assert again.runs[0].spaces[space].per_seed == first.runs[0].spaces[space].per_seed
    # another k is another clustering; the maps are still reused
    evaluate_combinations(catalog, text=["tfidf:min_df=1"], cache=cache,
                          config=EvaluationConfig(seeds=(0, 1), n_jobs=1, n_clusters=4, **FAST))
    assert len(calls) == 2 * 3


def test_a_damaged_cached_map_is_recomputed(tiny_catalog, tmp_path, tsne_calls):
    catalog = load_catalog(tiny_catalog).validated(image=False)
    cache = FeatureCache(tmp_path / "cache")
    config = EvaluationConfig(seeds=(0,), cluster_on=("tsne",), n_jobs=1, **FAST)
    evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=config, cache=cache)
    for entry in (tmp_path / "cache").rglob("*.npy"):
        entry.write_bytes(entry.read_bytes()[:40])
    tsne_calls.clear()
    report = evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=config, cache=cache)
    assert tsne_calls == [0] and report.runs[0].embeddings[0].shape == (len(catalog), 2)


def test_parallel_jobs_give_the_same_results_as_one_process(tiny_catalog, mean_colour):
    catalog = load_catalog(tiny_catalog).validated()
    results = {}
    for jobs in (1, 2):
        config = EvaluationConfig(seeds=(0, 1), n_jobs=jobs, **FAST)
        report = evaluate_combinations(catalog, text=["tfidf:min_df=1"], image=["mean-colour"], config=config)
        results[jobs] = {run.name: run for run in report.runs}
    assert results[1].keys() == results[2].keys()
    for name, run in results[1].items():
        other = results[2][name]
        for space in run.spaces:
            assert run.spaces[space].per_seed == other.spaces[space].per_seed
            for seed in (0, 1):
                np.testing.assert_array_equal(run.assignments[space][seed], other.assignments[space][seed])
        np.testing.assert_allclose(run.map_xy, other.map_xy)


def test_progress_names_the_run_and_seed_being_clustered(tiny_catalog):
    catalog = load_catalog(tiny_catalog).validated(image=False)
    events = []

    class Recorder:
        def start(self, description, total):
            events.append(("start", description, total))
            return len(events)

        def advance(self, handle, amount):
            events.append(("advance", handle, amount))

        def describe(self, handle, description):
            events.append(("describe", description))

        def stop(self, handle):
            events.append(("stop", handle))

    config = EvaluationConfig(seeds=(0, 1), cluster_on=("reduced",), n_jobs=1, **FAST)
    evaluate_combinations(catalog, text=["tfidf:min_df=1", "bow:min_df=1"], config=config, progress=Recorder())
    starts = [e for e in events if e[0] == "start"]
    assert ("start", "tfidf: tokenising", len(catalog)) in starts  # TF-IDF shows a bar too
    clustering = [e for e in starts if e[1].startswith("clustering")]
    assert clustering == [("start", "clustering tfidf:min_df=1 (seed 0)", 4)]
    described = [e[1] for e in events if e[0] == "describe"]
    assert "clustering tfidf:min_df=1 (seed 1)" in described and "clustering bow:min_df=1 (seed 0)" in described
    # library use without a reporter stays silent
    events.clear()
    evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=config)
    assert events == []


def test_assignments_file_lets_anyone_recompute_the_scores(tiny_catalog, tmp_path, mean_colour):
    from sklearn.metrics import adjusted_rand_score

    catalog = load_catalog(tiny_catalog).validated()
    out = tmp_path / "out"
    config = EvaluationConfig(seeds=(0, 1), **FAST)
    report = evaluate_combinations(catalog, text=["tfidf:min_df=1"], image=["mean-colour"], config=config)
    write_evaluation_report(report, out)
    with open(out / "assignments.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(catalog) * len(report.runs) * 3 * 2
    results = json.loads((out / "results.json").read_text())
    assert results["runs"][0]["map_seed"] == 0
    for run in results["runs"]:
        for space, res in run["spaces"].items():
            for per_seed in res["per_seed"]:
                picked = [r for r in rows if r["run"] == run["name"] and r["space"] == space
                          and int(r["seed"]) == per_seed["seed"]]
                assert [r["id"] for r in picked] == catalog.ids
                assert [r["category"] for r in picked] == catalog.labels
                ari = adjusted_rand_score([r["category"] for r in picked], [int(r["cluster"]) for r in picked])
                assert ari == pytest.approx(per_seed["ari"], abs=1e-4)
                has_xy = all(r["tsne_x"] and r["tsne_y"] for r in picked)
                assert has_xy  # every seed of every run has its t-SNE map


def test_map_title_gives_the_plotted_seeds_own_score_and_the_mean_apart(tiny_catalog):
    from placedemarche.report.plots import map_title

    catalog = load_catalog(tiny_catalog).validated(image=False)
    report = evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=EvaluationConfig(seeds=(3, 4), **FAST))
    run = report.runs[0]
    own = run.spaces["tsne"].per_seed[0]["ari"]
    title = map_title(run)
    assert f"seed 3: ARI {own:.3f}" in title
    assert f"mean of 2 seeds {run.mean('ari', 'tsne'):.3f}" in title


def test_image_only_runs_do_not_claim_a_text_field(tiny_catalog, tmp_path, mean_colour):
    from placedemarche.core import plugins
    from placedemarche.report.plots import text_field_label

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(tiny_catalog), "--image", "mean-colour",
                                      "--seeds", "1", "--perplexity", "5", "--reducer", "pca:n_components=5",
                                      "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "images only" in result.output and "text field" not in result.output
    results = json.loads((out / "results.json").read_text())
    assert results["catalog"]["text_field"] is None
    with open(out / "results.csv", newline="") as handle:
        assert {row["text_field"] for row in csv.DictReader(handle)} == {""}
    assert result.output.strip().splitlines()[-1] == f"Report: {out / 'report.html'}"


def test_category_colours_are_distinct_hues():
    import matplotlib.colors as mcolors

    from placedemarche.report.plots import _category_colours

    colours = [np.array(mcolors.to_rgb(c)) for c in _category_colours(20)]
    distances = [np.linalg.norm(a - b) for i, a in enumerate(colours) for b in colours[i + 1:]]
    # tab20 (used past ten colours before) has shade pairs 0.1-0.3 apart: every pair here is further
    assert min(distances) > 0.25


def test_map_legends_sit_outside_the_points(tiny_catalog):
    from placedemarche.report.plots import _pyplot, map_figure

    catalog = load_catalog(tiny_catalog).validated(image=False)
    report = evaluate_combinations(catalog, text=["tfidf:min_df=1"], config=EvaluationConfig(seeds=(0,), **FAST))
    fig = map_figure(report.runs[0], report.categories, catalog)
    fig.canvas.draw()
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1 - 1
    _pyplot().close(fig)


def test_category_names_are_wrapped_not_cut():
    from placedemarche.report.plots import _wrap

    assert _wrap("Beauty and Personal Care") == "Beauty and\nPersonal Care"
    assert _wrap("Home Furnishing") == "Home Furnishing"
    assert _wrap("Watches") == "Watches"


def test_results_table_keeps_long_specs_readable():
    from rich.console import Console

    from placedemarche.cli.evaluate_cmd import results_table
    from placedemarche.evaluate.evaluator import EvaluationReport, RunResult, SpaceResult

    spec = "mobilenet:alpha=0.75,weights='/models/keras/mobilenet_0_75.h5' + tfidf:max_df=0.5,ngram_range=(1,2)"
    scores = {m: 0.5 for m in ("ari", "nmi", "homogeneity", "completeness", "silhouette", "matched_accuracy")}
    spaces = {s: SpaceResult(s, 2, [scores], [[1]], seeds=[0]) for s in ("raw", "reduced", "tsne")}
    run = RunResult(name=spec, text="tfidf", image="mobilenet", spaces=spaces, seconds=1.0,
                    features={"tfidf": {"seconds": 1.0, "cached": True}, "mobilenet": {"seconds": 2.0, "cached": False}})
    report = EvaluationReport(runs=[run], config=EvaluationConfig(), categories=["a", "b"], catalog={})
    console = Console(width=120, record=True)
    console.print(results_table(report))
    text = console.export_text()
    assert "…" not in text
    # the spec is all there, folded over lines of its column
    cells = [line.split("│")[2].strip() for line in text.splitlines() if line.count("│") > 3]
    assert "".join(cells).replace(" ", "") == spec.replace(" ", "")


def test_api_validates_the_catalogue_on_entry(tiny_catalog, mean_colour):
    # an unvalidated catalogue with a missing photo: dropped and listed, not a crash half-way
    (Path(tiny_catalog).parent / "images" / "wat002.jpg").unlink()
    catalog = load_catalog(tiny_catalog)
    report = evaluate_combinations(catalog, image=["mean-colour"], config=EvaluationConfig(seeds=(0,), **FAST))
    assert report.catalog["products"] == len(catalog) - 1
    assert [row["id"] for row in report.catalog["dropped_rows"]] == ["wat002"]


@pytest.mark.slow
def test_readme_api_example_runs_as_written(tmp_path, monkeypatch):
    from helpers import FLIPKART, REPO

    if not (FLIPKART / "flipkart_com-ecommerce_sample_1050.csv").is_file():
        pytest.skip(f"shared Flipkart sample not found in {FLIPKART} (set PM_SHARED)")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Python API", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.setenv("PM_DATA_HOME", str(FLIPKART.parent))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    report = namespace["report"]
    assert report.runs and (tmp_path / "results" / "report.html").is_file()
    assert report.runs[0].mean("ari", "reduced") > 0.1
