"""A classifier that knows the category tree (classify/hierarchy.py): hierarchical scores against
a hand-computed example, paths that never contradict themselves, the stopping rule at the level
thresholds, pm train / pm predict / the service on a tiny two-level catalogue (plumbing checks,
not quality), and level-1 models unchanged."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from helpers import write_csv
from click.testing import CliRunner

from placedemarche.classify import TrainConfig, load_model, predict_catalog, train
from placedemarche.classify.hierarchy import (CategoryTree, LevelHeads, category_tree, hierarchical_prf,
                                              level_thresholds, stopped_paths)
from placedemarche.cli.main import cli
from placedemarche.data.catalog import load_catalog
from placedemarche.data.categories import at_level
from placedemarche.report.training import write_training_report

LEAVES = {  # leaf path -> words its products are made of
    "Home/Bed": ["pillow", "sheet", "duvet", "mattress"],
    "Home/Kitchen": ["pan", "knife", "kettle", "spoon"],
    "Toys/Cars": ["racer", "wheel", "truck", "garage"],
    "Toys/Dolls": ["doll", "dress", "house", "pram"],
}


def _tree_csv(tmp_path, per_leaf: int = 8):
    rng = np.random.default_rng(0)
    rows = []
    for leaf, words in LEAVES.items():
        for i in range(per_leaf):
            picked = rng.choice(words, size=3)
            rows.append({"uniq_id": f"{leaf.replace('/', '-')}-{i}", "product_name": " ".join(picked),
                         "description": " ".join(rng.choice(words, size=5)), "category": leaf})
    return write_csv(tmp_path / "tree.csv", rows)


def _catalog(tmp_path, level: int = 2):
    catalog = load_catalog(_tree_csv(tmp_path), label_column="category", category_separator="/")
    return at_level(catalog.validated(image=False), level)


# -- scores and paths, by hand ------------------------------------------------------------
def test_hierarchical_precision_recall_f1_by_hand():
    true = ["A > B > C", "A > D", "E > F"]
    pred = ["A > B > G", "A", ""]  # 2 of 3 shared; 1 of 2 (a shallower answer); nothing answered
    scores = hierarchical_prf(true, pred)
    # shared 2 + 1 + 0 = 3; predicted 3 + 1 + 0 = 4; true 3 + 2 + 2 = 7
    assert scores["hP"] == pytest.approx(3 / 4, abs=1e-4)
    assert scores["hR"] == pytest.approx(3 / 7, abs=1e-4)
    assert scores["hF"] == pytest.approx(2 * (3 / 4) * (3 / 7) / (3 / 4 + 3 / 7), abs=1e-4)
    assert hierarchical_prf(["A > B"], ["A > B"]) == {"hP": 1.0, "hR": 1.0, "hF": 1.0}


def test_summed_probabilities_and_paths_stay_on_the_tree():
    categories = ["A > B", "A > C", "D > E", "D"]  # "D": a branch that stops at level 1
    tree = CategoryTree(categories, 2)
    assert tree.nodes == [["A", "D"], ["A > B", "A > C", "D", "D > E"]]
    proba = np.random.default_rng(1).dirichlet(np.ones(4), size=50)
    level1 = tree.sum_to(proba, 1)
    assert np.allclose(level1[:, 0], proba[:, 0] + proba[:, 1]) and np.allclose(level1.sum(axis=1), 1)
    nodes, probs = tree.path_probabilities(proba)
    for row in range(50):
        parent, child = tree.nodes[0][nodes[row, 0]], tree.nodes[1][nodes[row, 1]]
        assert child == parent or child.startswith(parent + " > ")  # a child always under its parent
        assert probs[row, 0] >= probs[row, 1] - 1e-12
        assert child == categories[int(np.argmax(proba[row]))]


def test_answer_stops_at_the_first_level_below_its_threshold():
    tree = CategoryTree(["A > B", "A > C", "D > E"], 2)
    row = np.array([[0.5, 0.3, 0.2]])  # level 1: A 0.8; level 2: A > B 0.5
    assert stopped_paths(tree, row, [0.7, 0.5]) == [("A > B", 2, 0.5)]
    assert stopped_paths(tree, row, [0.7, 0.6]) == [("A", 1, 0.8)]
    # level 2 would pass, but an unsure first level stops the answer before it
    assert stopped_paths(tree, row, [0.9, 0.1]) == [("", 0, None)]
    assert stopped_paths(tree, np.full((1, 3), np.nan), [0.0, 0.0]) == [("", 0, None)]


def test_level_heads_give_leaf_probabilities_consistent_with_each_level():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    tree = CategoryTree(["A > B", "A > C", "D > E", "D > F"], 2)
    y = np.repeat(np.arange(4), 20)
    X = rng.normal(size=(80, 5)) + np.eye(4, 5)[y] * 3
    heads = LevelHeads(LogisticRegression(), [m.tolist() for m in tree.member]).fit(X, y)
    P = heads.predict_proba(X)
    assert P.shape == (80, 4) and np.allclose(P.sum(axis=1), 1)
    assert (np.argmax(P, axis=1) == y).mean() > 0.9
    # the leaf probabilities combine both levels: their sum over a parent follows the level-1 head
    level1 = heads.heads_[0].predict_proba(X)[:, 1]
    assert np.corrcoef(tree.sum_to(P, 1)[:, 1], level1)[0, 1] > 0.9


# -- training, prediction, service: plumbing on a tiny catalogue ---------------------------------
@pytest.mark.parametrize("hierarchy", ["flat", "per-level"])
def test_level_two_model_trains_saves_and_answers_paths(tmp_path, hierarchy):
    catalog = _catalog(tmp_path)
    out = tmp_path / "model"
    result = train(catalog, TrainConfig(text="tfidf", folds=2, hierarchy=hierarchy, target_precision=0.9), out=out)
    write_training_report(result, out)
    assert result.model.config.category_level == 2 and category_tree(result.model).levels == 2
    levels = result.summary["results"]["text"]["levels"]
    assert set(levels) == {"1", "2"} and {"accuracy", "macro_f1", "hP", "hR", "hF"} <= set(levels["2"])
    assert levels["1"]["categories"] == 2 and levels["2"]["categories"] == 4
    meta = json.loads((out / "model.json").read_text())
    assert meta["files"]["objects"] == "model.skops"  # LevelHeads is a trusted type
    stored = meta["metrics"]["decision"]["levels"]
    assert set(stored) == {"1", "2"} and "stopped" in meta["metrics"]["decision"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["results"]["text"]["levels"]["2"]["hF"] == levels["2"]["hF"]
    assert "hF" in (out / "report.html").read_text() and "deepest sure level" in (out / "report.html").read_text()

    model = load_model(out)
    assert model.config.hierarchy == hierarchy
    thresholds = level_thresholds(model.metrics["decision"])["text"]
    predicted = predict_catalog(model, catalog, out=tmp_path / "p.csv")
    assert predicted.columns[:6] == ["id", "name", "category", "probability", "path", "level"]
    proba = model.predict_proba(catalog)
    tree = category_tree(model)
    _, probs = tree.path_probabilities(proba)
    for row, p in zip(predicted.rows, probs):
        assert row["category"] == row["path"] or row["category"].startswith(row["path"] + " > ") or row["path"] == ""
        expected = 0
        while expected < 2 and thresholds[expected] is not None and p[expected] >= thresholds[expected]:
            expected += 1
        assert row["level"] == expected
        assert (row["path"] == "") if expected == 0 else len(row["path"].split(" > ")) == expected
    assert any(r["level"] == 2 for r in predicted.rows)
    with open(tmp_path / "p.csv", encoding="utf-8") as handle:
        assert "path" in next(csv.reader(handle))

    from placedemarche.serve.engine import predict_with
    from placedemarche.serve.loaded import load_for_serving
    from placedemarche.serve.products import Product

    loaded = load_for_serving(out)
    answer = predict_with(loaded, [Product(id="x", name="pillow duvet sheet", description="mattress pillow")], 2)[0]
    assert answer["category"] == "Home > Bed"
    assert answer["path"] in ("", "Home", "Home > Bed")
    assert answer["level"] == (len(answer["path"].split(" > ")) if answer["path"] else 0)
    strict = load_for_serving(out, target_precision=1.0)
    assert len(strict.level_thresholds["text"]) == 2


def test_train_and_predict_commands_at_level_two(tmp_path):
    data = _tree_csv(tmp_path)
    out = tmp_path / "m"
    runner = CliRunner()
    done = runner.invoke(cli, ["train", "--text", "tfidf", "--folds", "2", "--data", str(data), "--label-column",
                               "category", "--category-separator", "/", "--category-level", "2",
                               "--hierarchy", "per-level", "--out", str(out), "--no-progress", "--no-cache"])
    assert done.exit_code == 0, done.output
    assert "Level 2 (4 categories)" in done.output and "hF" in done.output
    done = runner.invoke(cli, ["predict", "--model", str(out), "--data", str(data), "--out", str(tmp_path / "p.csv"),
                               "--no-progress", "--no-cache"])
    assert done.exit_code == 0, done.output
    assert "paths answered down to the level" in done.output
    with open(tmp_path / "p.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert all(r["category"].startswith(r["path"]) and r["level"] in ("0", "1", "2") for r in rows)


def test_level_one_models_are_unchanged(tmp_path):
    catalog = _catalog(tmp_path, level=1)
    out = tmp_path / "model"
    train(catalog, TrainConfig(text="tfidf", folds=2), out=out)
    model = load_model(out)
    assert category_tree(model) is None and model.config.category_level == 1
    assert "levels" not in model.metrics["results"]["text"]
    predicted = predict_catalog(model, catalog)
    assert "path" not in predicted.columns and "level" not in predicted.columns
    # a model.json written before levels and hierarchies (no such config keys) still loads
    meta = json.loads((out / "model.json").read_text())
    for key in ("hierarchy", "category_level"):
        meta["config"].pop(key)
    (out / "model.json").write_text(json.dumps(meta))
    old = load_model(out)
    assert old.config.category_level == 1 and category_tree(old) is None
    assert old.predict(catalog) == model.predict(catalog)
