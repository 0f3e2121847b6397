"""Categories as a tree: paths read from a catalogue, the level chosen, small categories left
out or merged, and what train / evaluate say about it (data/categories.py)."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from helpers import make_catalog, write_csv
from placedemarche.cli.main import cli
from placedemarche.core.errors import CatalogError
from placedemarche.data.catalog import load_catalog
from placedemarche.data.categories import at_level, category_note, coarser, first_level_groups, leave_out_small
from placedemarche.data.category_paths import flipkart_path, read_path, split_path


def _tree_catalog(tmp_path, paths, column="category"):
    rows = [{"uniq_id": f"p{i}", "product_name": f"product {i} {p.split('/')[-1]}", column: p}
            for i, p in enumerate(paths)]
    return write_csv(tmp_path / "tree.csv", rows)


# -- reading paths ----------------------------------------------------------------------
def test_flipkart_tree_is_a_path_and_level_one_stays_todays_category(flipkart_dir):
    assert flipkart_path('["Home Furnishing >> Bed Linen >> Bedsheets"]') == ("Home Furnishing", "Bed Linen", "Bedsheets")
    catalog = load_catalog(flipkart_dir)
    assert len(catalog.categories) == 7 and catalog.category_paths[0][0] == catalog.labels[0]
    level2 = at_level(catalog, 2)
    assert len(level2.categories) == 62 and len(level2) == len(catalog)
    assert all(label.startswith(path[0] + " > ") for label, path in zip(level2.labels, level2.category_paths))


def test_empty_level_ends_the_path_and_separators_inside_names():
    assert split_path("A >> >> C", ">>") == ("A",)  # C has no known parent: not promoted to level 2
    assert split_path("A >>", ">>") == ("A",)
    # a multi-character separator leaves a single '>' or a '/' inside a name alone
    assert split_path("Kids > 3 years >> Toys/Games", ">>") == ("Kids > 3 years", "Toys/Games")
    # one column per level: a name may hold any separator
    row = {"l1": "Home / Garden", "l2": "Tools >> Power", "l3": ""}
    assert read_path(row, ["l1", "l2", "l3"], None) == ("Home / Garden", "Tools >> Power")
    with pytest.raises(CatalogError, match="separator is empty"):
        split_path("A/B", "")


def test_separator_column_and_shorter_rows_kept_at_their_deepest_level(tmp_path):
    paths = ["Home/Bed/Sheets"] * 3 + ["Home/Bed/Pillows"] * 3 + ["Home/Kitchen"] * 3 + ["Toys"] * 3
    catalog = load_catalog(_tree_catalog(tmp_path, paths), category_separator="/")
    assert catalog.labels[0] == "Home" and catalog.category_paths[6] == ("Home", "Kitchen")
    level3 = at_level(catalog, 3)
    assert level3.categories == ["Home > Bed > Pillows", "Home > Bed > Sheets", "Home > Kitchen", "Toys"]
    assert level3.category_info["shallow"] == {"products": 6, "categories": {"Home > Kitchen": 3, "Toys": 3}}
    assert "6 product(s) have no level 3: kept at their deepest level" in category_note(level3.category_info)


def test_level_that_no_row_has_is_a_one_line_error(tmp_path):
    catalog = load_catalog(_tree_catalog(tmp_path, ["A/B", "A/C", "D"]), category_separator="/")
    with pytest.raises(CatalogError, match=r"no product has a category at level 3 \(the deepest is level 2"):
        at_level(catalog, 3)
    # a path column read without its separator: the hint says what to add
    plain = load_catalog(_tree_catalog(tmp_path, ["A/B", "A/C", "D"]))
    with pytest.raises(CatalogError, match="--category-separator") as error:
        at_level(plain, 2)
    assert "\n" not in str(error.value)


def test_label_columns_one_per_level_and_unknown_column(tmp_path):
    rows = [{"uniq_id": f"p{i}", "product_name": f"n{i}", "top": top, "sub": sub}
            for i, (top, sub) in enumerate([("A", "x")] * 2 + [("A", "y")] * 2 + [("B", "")] * 2)]
    path = write_csv(tmp_path / "levels.csv", rows)
    catalog = load_catalog(path, label_column=["top", "sub"])
    assert catalog.labels == ["A"] * 4 + ["B"] * 2
    assert at_level(catalog, 2).categories == ["A > x", "A > y", "B"]
    assert catalog.category_info["columns"] == ["top", "sub"]
    with pytest.raises(CatalogError, match="no column 'rayon'"):
        load_catalog(path, label_column=["top", "rayon"])
    done = CliRunner().invoke(cli, ["evaluate", "--data", str(path), "--text", "tfidf", "--label-column", "top",
                                    "--label-column", "rayon", "--no-progress"])
    assert done.exit_code == 1 and "no column 'rayon'" in done.output and "Traceback" not in done.output
    # a label column can never be a feature
    with pytest.raises(CatalogError, match="cannot also be the name"):
        load_catalog(path, label_column=["top", "sub"], name_column="sub")


# -- small categories -------------------------------------------------------------------
def _counts(catalog):
    return {c: catalog.labels.count(c) for c in catalog.categories}


def test_small_categories_left_out_with_a_note_or_merged_into_their_parent(tmp_path):
    paths = ["A/a1"] * 5 + ["A/a2"] * 2 + ["A/a3"] * 1 + ["B/b1"] * 5 + ["C/c1"] * 1
    catalog = load_catalog(_tree_catalog(tmp_path, paths), category_separator="/")
    left = at_level(catalog, 2, min_size=3)
    assert _counts(left) == {"A > a1": 5, "B > b1": 5}
    info = left.category_info
    assert info["categories_left_out"] == [{"category": "A > a2", "products": 2}, {"category": "A > a3", "products": 1},
                                           {"category": "C > c1", "products": 1}]
    assert info["products_left_out"] == 4 and len(left.dropped) == 4
    assert "category left out: 'A > a2' has 2 product(s), fewer than 3" in {p.problem for p in left.dropped}
    merged = at_level(catalog, 2, min_size=3, merge_rare=True)
    # a2 and a3 (3 products together) become 'A'; C > c1 merges into C, still too small: left out
    assert _counts(merged) == {"A": 3, "A > a1": 5, "B > b1": 5}
    assert {m["category"]: m["into"] for m in merged.category_info["merged"]} == {"A > a2": "A", "A > a3": "A",
                                                                                  "C > c1": "C"}
    assert merged.category_info["categories_left_out"] == [{"category": "C", "products": 1}]
    # level 1 too: a first level with one product is left out, not a refusal
    level1 = at_level(catalog, 1, min_size=2)
    assert _counts(level1) == {"A": 8, "B": 5}
    with pytest.raises(CatalogError, match="every category at level 2 has fewer than 9 products"):
        at_level(catalog, 2, min_size=9)


def test_leave_out_small_keeps_the_level_chosen(tmp_path):
    paths = ["A/a1"] * 4 + ["A/a2"] * 2 + ["B/b1"] * 4
    chosen = at_level(load_catalog(_tree_catalog(tmp_path, paths), category_separator="/"), 2,
                      min_size=2, merge_rare=True)
    assert leave_out_small(chosen, 2) is chosen
    fewer = leave_out_small(chosen, 3)
    assert fewer.categories == ["A > a1", "B > b1"]
    assert fewer.category_info["level"] == 2 and fewer.category_info["products_left_out"] == 2


def test_coarser_and_first_level_groups():
    categories = ["A > x", "A > y", "B", "C > z"]
    assert coarser(categories, 1) == ["A", "A", "B", "C"]
    assert first_level_groups(categories) == [("A", 0, 2), ("B", 2, 3), ("C", 3, 4)]


# -- the commands ------------------------------------------------------------------------
def _two_level_catalog(tmp_path):
    """make_catalog's three categories, each split in two leaves, plus a leaf of two products."""
    path = make_catalog(tmp_path / "c", per_category=8)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for i, row in enumerate(rows):
        row["category"] = f"{row['category']} >> {'even' if i % 2 == 0 else 'odd'}"
    rows[0]["category"] = rows[1]["category"] = f"{rows[0]['category'].split(' >> ')[0]} >> rare"
    return write_csv(path, rows)


def test_train_at_level_two_leaves_out_what_the_folds_cannot_take(tmp_path):
    data = _two_level_catalog(tmp_path)
    out = tmp_path / "model"
    done = CliRunner().invoke(cli, ["train", "--data", str(data), "--text", "tfidf:min_df=1", "--folds", "3",
                                    "--category-separator", ">>", "--category-level", "2", "--out", str(out),
                                    "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "left out 1 category of fewer than 3 products (2 products)" in done.output
    metrics = json.loads((out / "metrics.json").read_text())
    category = metrics["catalog"]["category"]
    assert category["level"] == 2 and category["categories_left_out"][0]["products"] == 2
    assert len(metrics["catalog"]["categories"]) == 6
    levels = metrics["results"]["text"]["levels"]
    assert set(levels) == {"1", "2"} and levels["1"]["categories"] == 3
    assert levels["1"]["accuracy"] >= levels["2"]["accuracy"]  # a right leaf is a right branch
    page = (out / "report.html").read_text()
    assert "Scores per level of the category tree" in page and "categories left out" in page


def test_train_merge_rare_and_min_category_size(tmp_path):
    data = _two_level_catalog(tmp_path)
    with open(data, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    top = rows[0]["category"].split(" >> ")[0]
    rows[2]["category"] = top  # a product filed at the first level only: kept there, at level 2 too
    write_csv(data, rows)
    out = tmp_path / "model"
    done = CliRunner().invoke(cli, ["train", "--data", str(data), "--text", "tfidf:min_df=1", "--folds", "2",
                                    "--category-separator", ">>", "--category-level", "2", "--merge-rare",
                                    "--min-category-size", "3", "--out", str(out), "--no-progress"])
    assert done.exit_code == 0, done.output
    category = json.loads((out / "metrics.json").read_text())["catalog"]["category"]
    # 'top > rare' (2) and 'top > even' (2 left) merge into 'top' with the shallow product: 5, kept
    assert {m["category"]: m["into"] for m in category["merged"]} == {f"{top} > rare": top, f"{top} > even": top}
    assert category["categories_left_out"] == [] and category["min_size"] == 3
    assert category["shallow"]["products"] == 1


def test_evaluate_at_level_two_clusters_into_as_many_categories(tmp_path):
    data = _two_level_catalog(tmp_path)
    out = tmp_path / "eval"
    done = CliRunner().invoke(cli, ["evaluate", "--data", str(data), "--text", "tfidf:min_df=1",
                                    "--category-separator", ">>", "--category-level", "2", "--cluster-on", "raw",
                                    "--seeds", "1", "--min-category-size", "3", "--out", str(out), "--no-progress"])
    assert done.exit_code == 0, done.output
    results = json.loads((out / "results.json").read_text())
    assert len(results["categories"]) == 6 and results["catalog"]["category"]["level"] == 2
    raw = results["runs"][0]["spaces"]["raw"]
    assert len(raw["confusion_matrix"]) == 6  # k = the categories at level 2
    assert raw["ari_level1_mean"] is not None and "nmi_level1" in raw["per_seed"][0]
    page = (out / "report.html").read_text()
    assert "ARI level 1 (raw)" in page and "categories left out" in page
