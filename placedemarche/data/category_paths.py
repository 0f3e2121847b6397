"""Category paths as a catalogue gives them: a Flipkart ``product_category_tree``, a column of
paths cut at a separator, or one column per level (the tree logic is :mod:`placedemarche.data.categories`)."""

from __future__ import annotations

from typing import Sequence

from placedemarche.core.errors import CatalogError

#: How a label shows its path: "Home Furnishing > Bed Linen".
LABEL_SEPARATOR = " > "
#: The separator of a Flipkart ``product_category_tree``.
FLIPKART_SEPARATOR = ">>"
FLIPKART_TREE_COLUMN = "product_category_tree"


def split_path(value: str, separator: str) -> tuple[str, ...]:
    """The levels of a path such as 'A >> B >> C', top first, cut at the first empty level."""
    if not separator:
        raise CatalogError("the category separator is empty: give the characters between levels, e.g. '>>' or '/'")
    return _until_gap(part.strip() for part in value.split(separator))


def _until_gap(parts) -> tuple[str, ...]:
    path = []
    for part in parts:
        if not part:
            break
        path.append(part)
    return tuple(path)


def flipkart_path(tree: str) -> tuple[str, ...]:
    """The levels of a Flipkart ``product_category_tree`` such as '["A >> B >> C"]'."""
    text = tree.strip().removeprefix("[").removesuffix("]").strip().strip('"').strip()
    return split_path(text, FLIPKART_SEPARATOR)


def flipkart_category(tree: str) -> str:
    """First level of a Flipkart ``product_category_tree`` such as '["A >> B >> C"]'."""
    path = flipkart_path(tree)
    return path[0] if path else ""


def read_path(row: dict[str, str], columns: Sequence[str], separator: str | None) -> tuple[str, ...]:
    """A row's category path: one column per level, or one column of paths (a Flipkart tree,
    or cut at ``separator``), or one column holding a single level."""
    if len(columns) > 1:
        return _until_gap((row.get(c) or "").strip() for c in columns)
    value = row.get(columns[0]) or ""
    if separator:
        return split_path(value, separator)
    if columns[0] == FLIPKART_TREE_COLUMN:
        return flipkart_path(value)
    return (value.strip(),) if value.strip() else ()


def path_label(path: Sequence[str], level: int) -> str:
    """The category of ``path`` at ``level`` (its deepest level when shorter): the path down to
    there joined with :data:`LABEL_SEPARATOR`."""
    return LABEL_SEPARATOR.join(path[:level])
