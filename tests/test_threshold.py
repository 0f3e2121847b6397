"""The decision threshold measured on out-of-fold probabilities (classify/threshold.py), its
place in model.json, the training report and pm train's output."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from placedemarche.classify import TrainConfig, load_model, train
from placedemarche.classify.threshold import decision_summary, risk_coverage, threshold_for
from placedemarche.cli.main import cli
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.data.catalog import load_catalog


def brute_force(y, proba, target):
    """Reference: try every threshold, keep the one accepting most products at the target."""
    confidence, predicted = proba.max(axis=1), proba.argmax(axis=1)
    best = None
    for t in sorted(set(confidence)):
        accepted = confidence >= t
        precision = (predicted[accepted] == y[accepted]).mean()
        if precision >= target and (best is None or accepted.mean() > best[1]):
            best = (t, accepted.mean(), precision)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_threshold_accepts_the_most_products_at_the_target_precision(seed):
    rng = np.random.default_rng(seed)
    n, k = 300, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += rng.uniform(0, 3, n)  # mostly right, with a confidence to rank by
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for target in (0.8, 0.9, 0.97):
        expected = brute_force(y, proba, target)
        point = threshold_for(risk_coverage(y, proba), target)
        if expected is None:
            assert point["coverage"] == 0 and point["precision"] is None
        else:
            assert point["threshold"] == pytest.approx(expected[0], abs=1e-6)
            assert point["coverage"] == pytest.approx(expected[1], abs=1e-6)
            assert point["precision"] == pytest.approx(expected[2], abs=1e-6)
            assert point["precision"] >= target


def test_thinning_the_curve_keeps_the_chosen_threshold():
    rng = np.random.default_rng(7)
    n = 3000
    y = rng.integers(0, 3, n)
    proba = rng.dirichlet(np.ones(3), n)
    proba[np.arange(n), y] += rng.uniform(0, 1, n)
    proba /= proba.sum(axis=1, keepdims=True)
    full = risk_coverage(y, proba, points=10 ** 6)
    thin = risk_coverage(y, proba, points=50)
    assert len(thin["threshold"]) < len(full["threshold"])
    for target in (0.6, 0.75, 0.9):
        assert threshold_for(thin, target) == threshold_for(full, target)


def test_products_without_a_prediction_are_never_accepted_and_none_reaching_sends_all_to_review():
    y = np.array([0, 1, 0, 1])
    proba = np.array([[0.9, 0.1], [np.nan, np.nan], [0.6, 0.4], [0.7, 0.3]])
    curve = risk_coverage(y, proba)
    assert curve["coverage"][-1] == pytest.approx(0.75)  # 3 of 4 could be accepted at all
    assert threshold_for(curve, 1.0) == {"target_precision": 1.0, "threshold": 0.9, "coverage": 0.25,
                                         "precision": 1.0}
    wrong = np.array([[0.2, 0.8], [0.9, 0.1]])
    nothing = threshold_for(risk_coverage(np.array([0, 1]), wrong), 0.5)
    assert nothing["coverage"] == 0 and nothing["threshold"] > 1 and nothing["precision"] is None
    with pytest.raises(PlaceDeMarcheError, match="--target-precision must be in"):
        threshold_for(curve, 1.5)


def test_decision_summary_has_a_point_per_group_and_the_default_group_on_top():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    good = np.eye(2)[y] * 0.8 + 0.1
    noisy = rng.dirichlet([1, 1], 100)
    decision = decision_summary(y, {"text": noisy, "text+image": good}, "text+image", 0.95)
    assert set(decision["by_group"]) == {"text", "text+image"}
    assert decision["group"] == "text+image" and decision["coverage"] == 1.0
    assert decision["by_group"]["text"]["coverage"] < 1.0


def test_train_keeps_the_decision_in_model_json_and_the_report(tiny_catalog, tmp_path):
    out = tmp_path / "m"
    result = CliRunner().invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf:min_df=1",
                                      "--folds", "3", "--target-precision", "0.9", "--out", str(out),
                                      "--no-progress", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert "Decision threshold: at 0.9 precision," in result.output
    meta = json.loads((out / "model.json").read_text())
    decision = meta["metrics"]["decision"]
    assert decision["target_precision"] == 0.9 and decision["group"] == meta["default_group"]
    assert len(decision["curve"]["coverage"]) == len(decision["curve"]["precision"]) > 0
    assert load_model(out).metrics["decision"] == decision
    page = (out / "report.html").read_text()
    assert 'id="decision"' in page and "fig-risk-coverage" in page


def test_target_precision_out_of_range_is_one_line(tiny_catalog, tmp_path):
    result = CliRunner().invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf:min_df=1",
                                      "--target-precision", "1.5", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "--target-precision" in result.output
    with pytest.raises(PlaceDeMarcheError, match="--target-precision must be in"):
        TrainConfig(text="tfidf", target_precision=0).check()


@pytest.mark.slow
def test_flipkart_text_model_accepts_most_products_at_098_precision(flipkart_dir):
    """Quality on the real sample: a TF-IDF model's out-of-fold risk-coverage curve."""
    catalog = load_catalog(flipkart_dir).validated(text="both", labels=True)
    result = train(catalog, TrainConfig(text="tfidf", folds=5))
    decision = result.summary["decision"]
    assert decision["precision"] >= 0.98
    assert 0.5 < decision["coverage"] < 1.0  # accuracy is ~0.95: far from all, far from none
