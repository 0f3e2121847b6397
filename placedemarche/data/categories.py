"""Categories as a tree: category paths read from a catalogue, the level a run classifies at,
and the categories too small for it (left out, or merged into their parent level).

A product's category is a path, top level first: a Flipkart ``product_category_tree``
('["Home Furnishing >> Bed Linen >> Bedsheets"]'), a column of paths cut at a separator, or
several columns, one per level. The full path of every product stays in
``Catalog.category_paths``; ``Catalog.labels`` holds the category at the level asked, the path
down to that level joined with ``" > "`` ("Home Furnishing > Bed Linen"), so categories sort by
path and two leaves of the same name under different parents stay apart.

Rules for imperfect paths, the same everywhere:

- an empty level ends the path ("A >> >> C" is "A"): a name below a gap has no known parent;
- a product whose path is shorter than the level asked is kept at its deepest level (a branch
  of the tree that stops early is a leaf), and ``category_info["shallow"]`` counts them;
- a separator is cut with the spaces around it, so a multi-character separator (``>>``) leaves
  a single ``>`` inside a name alone; a name that holds the separator itself needs one column
  per level (``--label-column`` repeated).

Usage::

    from placedemarche.data.catalog import load_catalog
    from placedemarche.data.categories import at_level

    catalog = load_catalog("shared/data/flipkart").validated(image=False)
    level2 = at_level(catalog, 2, min_size=5)      # 'Home Furnishing > Bed Linen', ...
    level2.category_info["categories_left_out"]   # [{'category': ..., 'products': 3}, ...]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Sequence

from placedemarche.core.errors import CatalogError
from placedemarche.data.catalog import Catalog, RowProblem
from placedemarche.data.category_paths import FLIPKART_TREE_COLUMN, LABEL_SEPARATOR, path_label


def first_level_groups(categories: Sequence[str], paths: dict[str, Sequence[str]] | None = None
                       ) -> list[tuple[str, int, int]]:
    """``(first level, start, end)`` of each run of consecutive ``categories`` that share their
    first level (categories sorted by path come in blocks): what a confusion matrix separates."""
    groups: list[tuple[str, int, int]] = []
    for i, category in enumerate(categories):
        path = (paths or {}).get(category) or category.split(LABEL_SEPARATOR)
        top = path[0] if path else category
        if groups and groups[-1][0] == top:
            groups[-1] = (top, groups[-1][1], i + 1)
        else:
            groups.append((top, i, i + 1))
    return groups


def coarser(categories: Sequence[str], level: int) -> list[str]:
    """Each category cut to ``level`` ("A > B > C" at level 1 is "A"; one already at or above
    it stays): how scores at the parent levels are counted from predictions at a deeper one."""
    return [LABEL_SEPARATOR.join(c.split(LABEL_SEPARATOR)[:level]) for c in categories]


def at_level(catalog: Catalog, level: int = 1, *, min_size: int = 1, merge_rare: bool = False) -> Catalog:
    """The catalogue with its categories at ``level`` and without the categories of fewer than
    ``min_size`` products: they are left out (their products listed in ``dropped``) or, with
    ``merge_rare``, merged into their parent level, level by level, until big enough (a first
    level still too small is left out). ``category_info`` says what was done; nothing is refused
    unless no product has a category at ``level``."""
    if level < 1:
        raise CatalogError(f"category level {level}: levels count from 1 (the top of the tree)")
    where = catalog.source or "catalogue"
    if catalog.labels is None:
        raise CatalogError(f"{where} has no category column: name it with --label-column")
    paths = _current_paths(catalog)
    deepest = max((len(p) for p in paths), default=0)
    if level > deepest:
        column = catalog.columns.get("label")
        hint = (" (is it a column of paths? give --category-separator, or one --label-column per level)"
                if deepest == 1 and column != FLIPKART_TREE_COLUMN else "")
        raise CatalogError(f"{where}: no product has a category at level {level} (the deepest is level "
                           f"{deepest}, column {column or 'labels'}): use --category-level {max(deepest, 1)} "
                           f"or less{hint}")
    depth = [min(len(p), level) for p in paths]
    labels = [path_label(p, level) for p in paths]
    shallow = Counter(labels[i] for i, p in enumerate(paths) if 0 < len(p) < level)
    merged: list[dict] = []
    while True:
        counts = Counter(label for label in labels if label)
        rare = {c for c, n in counts.items() if n < min_size}
        movable = {labels[i] for i in range(len(labels)) if labels[i] in rare and depth[i] > 1}
        if not merge_rare or not movable:
            break
        for category in sorted(movable):
            rows = [i for i, label in enumerate(labels) if label == category]
            parent = path_label(paths[rows[0]], depth[rows[0]] - 1)
            merged.append({"category": category, "into": parent, "products": len(rows)})
            for i in rows:
                depth[i] -= 1
                labels[i] = parent
    left_out = sorted(rare)
    keep = [i for i, label in enumerate(labels) if label not in rare]
    if not keep and labels:
        higher = f", or --category-level {level - 1}" if level > 1 else ""
        raise CatalogError(f"{where}: every category at level {level} has fewer than {min_size} products (the "
                           f"largest has {max(counts.values(), default=0)}): use fewer --folds or a lower "
                           f"--min-category-size{higher}")
    problems = _left_out_rows(catalog, labels, rare, counts, min_size)
    info = {**catalog.category_info, "level": level, "deepest": deepest, "min_size": min_size,
            "merge_rare": merge_rare, "categories": len(set(labels[i] for i in keep)),
            "shallow": {"products": sum(shallow.values()), "categories": dict(sorted(shallow.items()))},
            "categories_left_out": [{"category": c, "products": counts[c]} for c in left_out],
            "products_left_out": len(labels) - len(keep), "merged": merged}
    kept = catalog.subset(keep)
    return replace(kept, labels=[labels[i] for i in keep], dropped=list(catalog.dropped) + problems,
                   category_info=info, validated_for=set(catalog.validated_for))


def leave_out_small(catalog: Catalog, min_size: int) -> Catalog:
    """The catalogue without the categories of fewer than ``min_size`` products, as they are now
    (no level chosen again, nothing merged): the guard of callers that need that many, such as
    the k folds of training. The same catalogue when none is that small."""
    counts = Counter(label for label in catalog.labels or [] if label)
    rare = {c for c, n in counts.items() if n < min_size}
    if not rare:
        return catalog
    keep = [i for i, label in enumerate(catalog.labels) if label not in rare]
    if not keep:
        raise CatalogError(f"{catalog.source or 'catalogue'}: every category has fewer than {min_size} products "
                           f"(the largest has {max(counts.values())}): use fewer --folds")
    info = dict(catalog.category_info)
    info["min_size"] = max(min_size, info.get("min_size", 1))
    info["categories_left_out"] = sorted(info.get("categories_left_out", []) + [
        {"category": c, "products": counts[c]} for c in rare], key=lambda c: c["category"])
    info["products_left_out"] = info.get("products_left_out", 0) + len(catalog) - len(keep)
    info["categories"] = len(counts) - len(rare)
    problems = _left_out_rows(catalog, catalog.labels, rare, counts, min_size)
    return replace(catalog.subset(keep), dropped=list(catalog.dropped) + problems, category_info=info,
                   validated_for=set(catalog.validated_for))


def _current_paths(catalog: Catalog) -> list[tuple[str, ...]]:
    """Each product's path, or its label read as a path where the label was changed after
    loading (e.g. by feedback) and is no longer a part of its path."""
    paths = catalog.category_paths or [()] * len(catalog)
    return [path if any(path_label(path, k) == label for k in range(1, len(path) + 1))
            else tuple(label.split(LABEL_SEPARATOR)) if label.strip() else ()
            for path, label in zip(paths, catalog.labels)]


def _left_out_rows(catalog: Catalog, labels: list[str], rare: set[str], counts: Counter,
                   min_size: int) -> list[RowProblem]:
    return [RowProblem(catalog.ids[i], catalog.lines[i],
                       f"category left out: '{label}' has {counts[label]} product(s), fewer than {min_size}")
            for i, label in enumerate(labels) if label in rare]


def category_note(info: dict) -> str | None:
    """One line on what :func:`at_level` left out, merged or kept shallow; None: nothing."""
    parts = []
    if info.get("categories_left_out"):
        shown = ", ".join(f"{c['category']} ({c['products']})" for c in info["categories_left_out"][:8])
        more = f" and {len(info['categories_left_out']) - 8} more" if len(info["categories_left_out"]) > 8 else ""
        parts.append(f"left out {len(info['categories_left_out'])} categor{'y' if len(info['categories_left_out']) == 1 else 'ies'} "
                     f"of fewer than {info['min_size']} products ({info['products_left_out']} products): {shown}{more}")
    if info.get("merged"):
        parts.append(f"merged {len(info['merged'])} small categor{'y' if len(info['merged']) == 1 else 'ies'} "
                     f"into their parent ({sum(m['products'] for m in info['merged'])} products)")
    shallow = info.get("shallow", {}).get("products")
    if shallow:
        parts.append(f"{shallow} product(s) have no level {info['level']}: kept at their deepest level")
    return "; ".join(parts) or None
