"""Catalogue loading and validation: Flipkart layout, generic CSVs, bad rows."""

from __future__ import annotations

import csv

import pytest

from placedemarche.data.catalog import Catalog, flipkart_category, load_catalog
from placedemarche.core.errors import CatalogError


def test_flipkart_sample_loads_with_seven_balanced_categories(flipkart_dir):
    catalog = load_catalog(flipkart_dir)
    assert len(catalog) == 1050
    assert len(catalog.categories) == 7
    assert all(catalog.labels.count(c) == 150 for c in catalog.categories)
    assert "Watches" in catalog.categories
    assert catalog.image_paths[0].parent.name == "images"


def test_flipkart_missing_images_are_reported_and_dropped(flipkart_dir):
    catalog = load_catalog(flipkart_dir)
    problems = catalog.problems(text=None, image=True, check_decode=False)
    assert len(problems) == 3
    assert all("not found" in p.problem for p in problems)
    kept = catalog.validated(image=True, check_decode=False)
    assert len(kept) == 1047 and len(kept.dropped) == 3
    with pytest.raises(CatalogError, match=r"3 unusable row\(s\).*line \d+.*--on-missing drop"):
        catalog.validated(image=True, on_missing="fail", check_decode=False)


def test_category_tree_first_level():
    assert flipkart_category('["Home Furnishing >> Curtains & Accessories >> Curtains"]') == "Home Furnishing"
    assert flipkart_category("Watches") == "Watches"


def test_text_fields(tiny_catalog):
    catalog = load_catalog(tiny_catalog)
    name, desc, both = catalog.texts("name")[0], catalog.texts("description")[0], catalog.texts("both")[0]
    assert both.startswith(name) and both.endswith(desc)
    with pytest.raises(CatalogError, match="unknown text field"):
        catalog.texts("title")


def _rewrite(path, mutate):
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    mutate(rows)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_empty_description_and_corrupt_image_are_named(tiny_catalog):
    def mutate(rows):
        rows[1]["product_name"] = ""
        rows[1]["description"] = ""
    _rewrite(tiny_catalog, mutate)
    catalog = load_catalog(tiny_catalog)
    catalog.image_paths[4].write_bytes(b"this is not a jpeg")
    problems = catalog.problems()
    assert [(p.row_id, p.line) for p in problems] == [(catalog.ids[1], 3), (catalog.ids[4], 6)]
    assert "empty name and description" in problems[0].problem
    assert "cannot be decoded" in problems[1].problem
    kept = catalog.validated()
    assert len(kept) == len(catalog) - 2
    # text-only use keeps the product whose image is broken
    assert len(catalog.validated(image=False)) == len(catalog) - 1


def test_missing_columns_give_one_line_errors(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("sku,price\n1,3.5\n")
    with pytest.raises(CatalogError, match="no text or image column found.*columns are: sku, price"):
        load_catalog(path)
    path.write_text("id,name\n1,watch\n")
    with pytest.raises(CatalogError, match="no column 'cat' for the label.*columns are: id, name"):
        load_catalog(path, label_column="cat")
    with pytest.raises(CatalogError, match="no label column.*--label-column"):
        load_catalog(path, require_labels=True)


def test_generic_csv_with_named_columns(tmp_path):
    images = tmp_path / "pics"
    images.mkdir()
    path = tmp_path / "products.csv"
    path.write_text("sku,title,cat,photo\nA1,Steel watch,Watches,a.jpg\nB2,Baby romper,Baby,b.jpg\n")
    catalog = load_catalog(path, id_column="sku", name_column="title", label_column="cat",
                           image_column="photo", image_dir=images)
    assert catalog.ids == ["A1", "B2"]
    assert catalog.labels == ["Watches", "Baby"]
    assert catalog.image_paths[1] == images / "b.jpg"


def test_duplicate_ids_rejected(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,name\n1,a\n1,b\n")
    with pytest.raises(CatalogError, match="duplicate product ids 1"):
        load_catalog(path)


def test_not_found_and_ambiguous_directory(tmp_path):
    with pytest.raises(CatalogError, match="catalogue not found"):
        load_catalog(tmp_path / "nope.csv")
    (tmp_path / "a.csv").write_text("id,name\n1,a\n")
    (tmp_path / "b.csv").write_text("id,name\n1,a\n")
    with pytest.raises(CatalogError, match="holds 2 CSV files"):
        load_catalog(tmp_path)


def test_subset_keeps_rows_aligned(tiny_catalog):
    catalog = load_catalog(tiny_catalog)
    sub = catalog.subset([3, 0])
    assert sub.ids == [catalog.ids[3], catalog.ids[0]]
    assert sub.labels == [catalog.labels[3], catalog.labels[0]]
    assert sub.lines == [5, 2]
    with pytest.raises(CatalogError):
        Catalog(ids=["a"], names=[], descriptions=["x"], image_paths=[None])


def _write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_label_column_is_never_read_as_the_product_name(tmp_path):
    # `label` is both a category candidate and a name candidate: it used to become the text (ARI 1.0).
    path = _write_csv(tmp_path / "c.csv", ["sku", "photo", "label"],
                      [[f"p{i}", f"{i}.jpg", "Watches" if i % 2 else "Kitchen"] for i in range(6)])
    catalog = load_catalog(path, label_column="label", id_column="sku", image_column="photo")
    assert catalog.columns["label"] == "label"
    assert catalog.columns["name"] is None
    assert not any(catalog.texts("both"))
    with pytest.raises(CatalogError, match=r"no name or description column for the text"):
        catalog.validated(text="both", image=False, labels=True)


def test_label_column_given_as_a_text_column_is_refused(tmp_path):
    path = _write_csv(tmp_path / "c.csv", ["id", "title", "category"], [["a", "x", "Watches"]])
    with pytest.raises(CatalogError, match=r"'category' is the category \(label\) column.*leak"):
        load_catalog(path, name_column="category")


def test_automatic_label_column_is_not_a_text_candidate(tmp_path):
    # `label` named as the category: the automatic name lookup must skip it.
    path = _write_csv(tmp_path / "c.csv", ["id", "label", "description"],
                      [["a", "Watches", "steel dial"], ["b", "Kitchen", "pan"]])
    catalog = load_catalog(path, label_column="label")
    assert catalog.columns["label"] == "label" and catalog.columns["name"] is None
    assert catalog.texts("both") == ["steel dial", "pan"]


def test_missing_description_column_is_named(tmp_path):
    path = _write_csv(tmp_path / "c.csv", ["id", "product_name", "category"],
                      [["a", "steel watch", "Watches"], ["b", "pan", "Kitchen"]])
    catalog = load_catalog(path)
    assert "no description column" in catalog.text_column_warning("both")
    assert catalog.text_columns("both") == ["product_name"]
    with pytest.raises(CatalogError, match=r"no description column.*--description-column"):
        catalog.validated(text="description", image=False)
    assert catalog.text_column_warning("name") is None


def test_no_usable_row_left_says_why(tmp_path):
    path = _write_csv(tmp_path / "c.csv", ["id", "product_name", "image", "category"],
                      [[f"p{i}", f"name {i}", f"missing{i}.jpg", "Watches"] for i in range(4)])
    with pytest.raises(CatalogError, match=r"dropping 4: 4 x image file not found.*images from column image"):
        load_catalog(path).validated(text=None, image=True)


def test_image_run_without_image_column_is_refused(tmp_path):
    path = _write_csv(tmp_path / "c.csv", ["id", "product_name", "category"], [["a", "watch", "Watches"]])
    with pytest.raises(CatalogError, match=r"no image column.*--image-column"):
        load_catalog(path).validated(text=None, image=True)


def test_validating_again_for_the_same_needs_reads_no_image(tiny_catalog, monkeypatch):
    import placedemarche.data.catalog as catalog_module

    checked = []
    real = catalog_module.image_problem
    monkeypatch.setattr(catalog_module, "image_problem", lambda p, **kw: checked.append(p) or real(p, **kw))
    catalog = load_catalog(tiny_catalog).validated(text="both", image=True, labels=True)
    assert len(checked) == len(catalog)
    checked.clear()
    assert catalog.validated(text="both", image=True, labels=True) is catalog
    assert checked == []
    # other needs are checked; a subset is checked afresh
    catalog.validated(text="name", image=True, labels=True)
    assert len(checked) == len(catalog)
    checked.clear()
    catalog.subset(range(3)).validated(text="both", image=True, labels=True)
    assert len(checked) == 3


def test_parquet_catalogue_loads_like_its_csv(tiny_catalog, tmp_path):
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(tiny_catalog, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    table = pa.table({column: [row[column] for row in rows] for column in rows[0]})
    table = table.set_column(table.column_names.index("description"), "description",
                             pa.array([None] + [row["description"] for row in rows[1:]]))
    parquet = tiny_catalog.parent / "catalog.parquet"
    pq.write_table(table, parquet)
    from_csv, from_parquet = load_catalog(tiny_catalog), load_catalog(parquet)
    assert from_parquet.ids == from_csv.ids and from_parquet.labels == from_csv.labels
    assert from_parquet.names == from_csv.names and from_parquet.image_paths == from_csv.image_paths
    assert from_parquet.descriptions[0] == "" and from_parquet.descriptions[1:] == from_csv.descriptions[1:]
    assert from_parquet.lines[:2] == [2, 3] and from_parquet.columns == from_csv.columns
    # a directory holding only a Parquet catalogue resolves to it
    only = tmp_path / "only"
    only.mkdir()
    pq.write_table(table, only / "products.parquet")
    assert load_catalog(only, image_dir=tiny_catalog.parent / "images").ids == from_csv.ids


def test_unreadable_parquet_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 but not really")
    with pytest.raises(CatalogError, match="bad.parquet: not a readable Parquet file"):
        load_catalog(bad)
