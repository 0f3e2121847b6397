"""`pm extract` and the extraction driver: shards, resume after an interruption, fit once,
failed rows, and `pm evaluate/train --features STORE` reading the store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from placedemarche import ImageExtractor, TextExtractor, hookimpl
from placedemarche.cli.main import cli
from placedemarche.core import plugins
from placedemarche.data.catalog import load_catalog
from placedemarche.features.driver import extract_to_store
from placedemarche.core.plugins import create_plugin
from placedemarche.features.store import FeatureSet, FeatureStore


class CountingWords(TextExtractor):
    """Learns a vocabulary; counts fit and transform calls; can stop like Ctrl-C after some batches."""

    name = "counting-words"
    description = "word counts over a learned vocabulary (test plugin)"
    learns_from_data = True
    calls = {"fit": 0, "transform": 0}
    interrupt_after: int | None = None

    def __init__(self, size: int = 12):
        self.size = size

    def fit(self, X, y=None):
        type(self).calls["fit"] += 1
        words = sorted({w for text in X for w in text.lower().split()})
        self.vocabulary_ = {w: i for i, w in enumerate(words[: self.size])}
        return self

    def transform(self, X):
        calls = type(self).calls
        if self.interrupt_after is not None and calls["transform"] >= self.interrupt_after:
            raise KeyboardInterrupt
        calls["transform"] += 1
        out = np.zeros((len(X), self.size), np.float32)
        for r, text in enumerate(X):
            for w in text.lower().split():
                if w in self.vocabulary_:
                    out[r, self.vocabulary_[w]] += 1
        return out


class _Plugin:
    @staticmethod
    @hookimpl
    def register_text_extractors(register):
        register(CountingWords)


@pytest.fixture
def counting():
    name = plugins.register_plugin(_Plugin, name="counting-plugin", provider="tests")
    CountingWords.calls.update(fit=0, transform=0)
    CountingWords.interrupt_after = None
    yield CountingWords
    CountingWords.interrupt_after = None
    plugins.unregister_plugin(name)


def test_interrupted_extraction_resumes_without_recomputing_finished_shards(tiny_catalog, tmp_path, counting):
    catalog = load_catalog(tiny_catalog)  # 18 rows: shards of 4 -> 5 shards, batches of 2
    counting.interrupt_after = 5
    with pytest.raises(KeyboardInterrupt):
        extract_to_store(catalog, ["counting-words"], (), tmp_path / "store", shard_rows=4, batch_size=2)
    feature_set = FeatureStore(tmp_path / "store").sets()[0]
    assert not feature_set.complete
    assert [s is not None for s in feature_set.manifest["shards"]] == [True, True]  # 4 batches done
    assert counting.calls == {"fit": 1, "transform": 5}

    counting.interrupt_after = None
    counting.calls.update(fit=0, transform=0)
    done = extract_to_store(catalog, ["counting-words"], (), tmp_path / "store", shard_rows=4, batch_size=2)[0]
    # the 10 rows of shards 2-4 only, with the plugin fitted by the first run (no refit)
    assert counting.calls == {"fit": 0, "transform": 5}
    assert (done.shards_written, done.shards_reused) == (3, 2)
    ids, matrix = FeatureSet(done.path).read()
    assert ids == catalog.ids
    expected = CountingWords().fit(catalog.texts()).transform(catalog.texts())
    assert np.array_equal(matrix, expected)


def test_pm_extract_interrupted_says_how_to_resume(tiny_catalog, tmp_path, counting):
    counting.interrupt_after = 3
    args = ["extract", "--text", "counting-words", "--data", str(tiny_catalog), "--out", str(tmp_path / "store"),
            "--shard-rows", "4", "--batch-size", "2", "--no-progress"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 130
    assert "finished shards are kept" in result.output and "interrupted" in result.output
    counting.interrupt_after = None
    resumed = CliRunner().invoke(cli, args)
    assert resumed.exit_code == 0, resumed.output
    assert "4/1" in resumed.output  # 4 shards written, 1 reused


def test_learned_extractor_is_fitted_once_and_the_fit_recorded(tiny_catalog, tmp_path, counting):
    catalog = load_catalog(tiny_catalog)
    everything = extract_to_store(catalog, ["counting-words"], (), tmp_path / "store", shard_rows=5)[0]
    assert counting.calls["fit"] == 1
    assert everything.fit["rows"] == 18 and everything.fit["on"] == "all"
    sampled = extract_to_store(catalog, ["counting-words"], (), tmp_path / "store", fit_sample=6, seed=3)[0]
    manifest = json.loads((sampled.path / "manifest.json").read_text())
    assert manifest["fit"]["rows"] == 6 and manifest["fit"]["sample"] == 6 and manifest["fit"]["seed"] == 3
    assert manifest["fit"]["on"] == "sample" and manifest["fit"]["learns_from_data"] is True
    assert sampled.path != everything.path  # another fit, another set
    # the same seed draws the same rows: the resumed/re-run set is reused as it is
    again = extract_to_store(catalog, ["counting-words"], (), tmp_path / "store", fit_sample=6, seed=3)[0]
    assert again.path == sampled.path and again.shards_written == 0 and counting.calls["fit"] == 2


def test_tfidf_in_the_store_equals_tfidf_in_memory(tiny_catalog, tmp_path):
    catalog = load_catalog(tiny_catalog)
    done = extract_to_store(catalog, ["tfidf:min_df=1"], (), tmp_path / "store", shard_rows=7, batch_size=3)[0]
    ids, matrix = FeatureSet(done.path).read()
    expected = create_plugin("text", "tfidf:min_df=1").fit_transform(catalog.texts())
    assert done.storage == "sparse" and ids == catalog.ids
    assert abs(matrix - expected).max() < 1e-6


def test_a_learning_image_extractor_fits_on_the_readable_images_and_lists_the_others(tiny_catalog, tmp_path):
    (tiny_catalog.parent / "images" / "kit002.jpg").write_bytes(b"not a jpeg")
    catalog = load_catalog(tiny_catalog)
    done = extract_to_store(catalog, (), ["sift:n_words=8,max_keypoints=50"], tmp_path / "store",
                            shard_rows=8, batch_size=4)[0]
    assert [row["id"] for row in done.failed] == ["kit002"] and "kit002.jpg" in done.failed[0]["reason"]
    ids, matrix = FeatureSet(done.path).read()
    assert len(ids) == len(catalog) - 1 and "kit002" not in ids and matrix.shape[0] == len(ids)


def test_unreadable_and_missing_images_are_listed_in_the_manifest(tiny_catalog, tmp_path):
    (tiny_catalog.parent / "images" / "kit002.jpg").write_bytes(b"not a jpeg")
    catalog = load_catalog(tiny_catalog)
    catalog.image_paths[3] = None
    done = extract_to_store(catalog, (), ["colour-histogram"], tmp_path / "store", shard_rows=4, batch_size=3)[0]
    failed = {row["id"]: row["reason"] for row in done.failed}
    assert set(failed) == {"kit002", catalog.ids[3]}
    assert "kit002.jpg" in failed["kit002"] and failed[catalog.ids[3]] == "no image given"
    assert done.features == 16
    ids, _ = FeatureSet(done.path).read()
    assert "kit002" not in ids and len(ids) == 16


class MeanPixel(ImageExtractor):
    name = "mean-pixel"
    description = "mean RGB of the image, read from any source (test plugin)"

    def transform(self, X):
        from placedemarche.data.images import load_image

        return np.array([load_image(source, 16).reshape(-1, 3).mean(0) for source in X], dtype=np.float32)


class _ImagePlugin:
    @staticmethod
    @hookimpl
    def register_image_extractors(register):
        register(MeanPixel)


def test_pm_extract_reads_image_urls_as_given(tiny_catalog, tmp_path, offline):
    import csv

    name = plugins.register_plugin(_ImagePlugin, name="mean-pixel-plugin", provider="tests")
    try:
        with open(tiny_catalog, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:
            row["image"] = (tiny_catalog.parent / "images" / row["image"]).as_uri()  # file:///...
        rows[1]["image"] = "https://images.invalid/404.jpg"
        urls = tmp_path / "urls.csv"
        with open(urls, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        result = CliRunner().invoke(cli, ["extract", "--image", "mean-pixel", "--data", str(urls),
                                          "--out", str(tmp_path / "store"), "--no-progress"])
        assert result.exit_code == 0, result.output
        feature_set = FeatureStore(tmp_path / "store").sets()[0]
        assert [row["id"] for row in feature_set.failed] == [rows[1]["uniq_id"]]
        assert "images.invalid" in feature_set.failed[0]["reason"]
        ids, matrix = feature_set.read()
        assert len(ids) == 17 and matrix.shape == (17, 3) and matrix.std() > 0
    finally:
        plugins.unregister_plugin(name)


def _scores(out):
    runs = json.loads((out / "results.json").read_text())["runs"]
    return {run["name"]: {space: [(round(s["ari"], 6), round(s["silhouette"], 6)) for s in data["per_seed"]]
                          for space, data in run["spaces"].items()} for run in runs}


EVAL = ["--seeds", "1", "--cluster-on", "raw", "--cluster-on", "reduced", "--reducer", "pca:n_components=5",
        "--no-progress", "--no-cache", "--jobs", "1"]


def test_pm_extract_then_evaluate_features_scores_like_plain_evaluate(tiny_catalog, tmp_path):
    runner = CliRunner()
    store = tmp_path / "store"
    extracted = runner.invoke(cli, ["extract", "--text", "tfidf:min_df=1", "--image", "colour-histogram",
                                    "--data", str(tiny_catalog), "--out", str(store), "--shard-rows", "5",
                                    "--no-progress"])
    assert extracted.exit_code == 0, extracted.output
    assert "Feature sets" in extracted.output and f"Store: {store}" in extracted.output
    assert len(FeatureStore(store).sets()) == 2

    plain = runner.invoke(cli, ["evaluate", "--text", "tfidf:min_df=1", "--image", "colour-histogram",
                                "--data", str(tiny_catalog), "--out", str(tmp_path / "plain"), *EVAL])
    assert plain.exit_code == 0, plain.output
    # without --text/--image: every set in the store
    stored = runner.invoke(cli, ["evaluate", "--features", str(store), "--data", str(tiny_catalog),
                                 "--out", str(tmp_path / "stored"), *EVAL])
    assert stored.exit_code == 0, stored.output
    assert "features from" in stored.output
    expected, got = _scores(tmp_path / "plain"), _scores(tmp_path / "stored")
    assert set(got) == {"tfidf:min_df=1", "colour-histogram", "tfidf:min_df=1 + colour-histogram"}
    assert got == expected


def test_evaluate_features_drops_products_without_a_feature_row(tiny_catalog, tmp_path):
    catalog = load_catalog(tiny_catalog)
    catalog.image_paths[0] = None  # extracted without this image: no feature row
    extract_to_store(catalog, (), ["colour-histogram"], tmp_path / "store")
    result = CliRunner().invoke(cli, ["evaluate", "--features", str(tmp_path / "store"), "--image", "colour-histogram",
                                      "--data", str(tiny_catalog), "--out", str(tmp_path / "out"), *EVAL])
    assert result.exit_code == 0, result.output
    assert "dropped 1 product(s) without a feature row" in result.output
    assert json.loads((tmp_path / "out" / "results.json").read_text())["catalog"]["products"] == 17


def test_train_features_reads_frozen_extractors_from_the_store(tiny_catalog, tmp_path):
    runner = CliRunner()
    store = tmp_path / "store"
    assert runner.invoke(cli, ["extract", "--image", "colour-histogram", "--data", str(tiny_catalog),
                               "--out", str(store), "--no-progress"]).exit_code == 0
    result = runner.invoke(cli, ["train", "--features", str(store), "--data", str(tiny_catalog), "--folds", "2",
                                 "--out", str(tmp_path / "model"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "colour-histogram: image features from" in result.output
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["features"]["image"]["cached"] is True


def test_clear_one_line_errors(tiny_catalog, tmp_path):
    runner = CliRunner()
    store = tmp_path / "store"
    store.mkdir()
    missing = runner.invoke(cli, ["evaluate", "--features", str(store), "--text", "tfidf", "--data", str(tiny_catalog),
                                  "--out", str(tmp_path / "o"), *EVAL])
    assert missing.exit_code == 1
    assert "no complete 'tfidf' text features" in missing.output and "pm extract --text 'tfidf'" in missing.output
    assert "Traceback" not in missing.output and len(missing.output.strip().splitlines()) <= 3
    nowhere = runner.invoke(cli, ["evaluate", "--features", str(tmp_path / "nowhere"), "--data", str(tiny_catalog)])
    assert nowhere.exit_code == 1 and "feature store not found" in nowhere.output
    empty = runner.invoke(cli, ["train", "--features", str(store), "--data", str(tiny_catalog)])
    assert empty.exit_code == 1 and "no complete feature set" in empty.output
    local = runner.invoke(cli, ["extract", "--text", "tfidf", "--data", str(tiny_catalog), "--out", str(store),
                                "--concurrency", "2"])
    assert local.exit_code == 1 and "--concurrency only apply to --engine ray" in local.output
    nothing = runner.invoke(cli, ["extract", "--data", str(tiny_catalog), "--out", str(store)])
    assert nothing.exit_code == 1 and "nothing to extract" in nothing.output
    (tmp_path / "a-file").write_text("x")
    on_file = runner.invoke(cli, ["extract", "--text", "tfidf", "--data", str(tiny_catalog), "--out",
                                 str(tmp_path / "a-file")])
    assert on_file.exit_code == 2 and "is a file" in on_file.output  # click refuses it before any work
    assert "Traceback" not in on_file.output


def test_store_features_picks_every_set_and_leaves_learners_to_refit(tiny_catalog, tmp_path):
    # the Python API of --features STORE: what pm evaluate and pm train call
    from placedemarche.core.plugins import create_plugin
    from placedemarche.features.extraction import extract_features, features_from, store_features

    catalog = load_catalog(tiny_catalog)
    catalog.image_paths[0] = None  # extracted without this image: no feature row
    extract_to_store(catalog, ["tfidf:min_df=1"], ["colour-histogram"], tmp_path / "store")
    catalog = load_catalog(tiny_catalog)
    aligned, source = store_features(tmp_path / "store", catalog)  # no specs: every complete set
    assert (source.text, source.image) == (("tfidf:min_df=1",), ("colour-histogram",))
    assert set(source.sets) == {("text", "tfidf:min_df=1"), ("image", "colour-histogram")} and not source.refit
    assert source.dropped == [catalog.ids[0]] and aligned.ids == catalog.ids[1:]
    with features_from(source):
        feats = extract_features(create_plugin("image", "colour-histogram"), aligned.image_paths)
    assert feats.from_cache and feats.matrix.shape[0] == len(aligned) == 17

    kept, training = store_features(tmp_path / "store", catalog, refit_learners=True)
    assert training.refit == [("text", "tfidf:min_df=1")]  # fitted on each fold's rows, never read
    assert list(training.sets) == [("image", "colour-histogram")] and len(kept) == 17
