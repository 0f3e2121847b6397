"""``pm audit --apply``: a corrected copy of a catalogue, from a reviewed copy of suspects.csv.

A person copies ``suspects.csv``, writes ``yes`` in the ``accept`` column of the suggestions
they agree with (and may change ``suggested_category`` to another category first), then
applies it: the declared category of those rows is replaced in a *new* file; every other
cell, row and column is copied as it is, and the original is never written.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from placedemarche.core.errors import CatalogError
from placedemarche.core.files import atomic_write_text, atomic_writer
from placedemarche.data.catalog import PARQUET_SUFFIXES, load_catalog

#: The column a reviewer fills in, and the values it may hold (case-insensitive).
ACCEPT_COLUMN = "accept"
ACCEPTED = ("yes", "y", "true", "1", "x", "accept", "accepted")
REJECTED = ("", "no", "n", "false", "0", "reject", "rejected")
REVIEW_COLUMNS = ("id", "suggested_category", ACCEPT_COLUMN)


class ReviewError(CatalogError):
    """A reviewed suspects file cannot be applied as it is."""


@dataclass
class ApplyResult:
    """What :func:`apply_review` did: the file written and the rows it changed."""

    out: Path
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (was, now)
    reviewed: int = 0  # rows in the review file
    new_categories: list[str] = field(default_factory=list)  # accepted names the catalogue did not have


def read_review(path: str | os.PathLike) -> tuple[dict[str, str], int]:
    """``({id: category}, rows)``: the accepted corrections of a reviewed suspects file."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            missing = [c for c in REVIEW_COLUMNS if c not in header]
            if missing:
                hint = (f"add an '{ACCEPT_COLUMN}' column and write yes in the rows to apply"
                        if missing == [ACCEPT_COLUMN] else "give a copy of the suspects.csv that pm audit wrote")
                raise ReviewError(f"{path}: no column {', '.join(repr(c) for c in missing)} "
                                  f"(columns: {', '.join(header) or 'none'}): {hint}")
            rows = [(reader.line_num, row) for row in reader]
    except OSError as exc:
        raise ReviewError(f"cannot read the reviewed suspects {path}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ReviewError(f"{path}: not a readable UTF-8 CSV file ({exc})") from None
    accepted: dict[str, str] = {}
    for line, row in rows:
        value = (row.get(ACCEPT_COLUMN) or "").strip().lower()
        pid = (row.get("id") or "").strip()
        if value not in ACCEPTED and value not in REJECTED:
            raise ReviewError(f"{path} line {line}: accept is '{row.get(ACCEPT_COLUMN)}': write yes to apply "
                              "the suggestion, no (or nothing) to leave the row as it is")
        if value in REJECTED:
            continue
        category = (row.get("suggested_category") or "").strip()
        if not pid:
            raise ReviewError(f"{path} line {line}: accepted row has no id")
        if not category:
            raise ReviewError(f"{path} line {line}: product {pid} is accepted but its suggested_category is empty")
        if accepted.get(pid, category) != category:
            raise ReviewError(f"{path} line {line}: product {pid} is accepted twice with different "
                              f"categories ('{accepted[pid]}' and '{category}'): keep one")
        accepted[pid] = category
    return accepted, len(rows)


def _known_ids(review: Path, ids: set[str]) -> None:
    with open(review, newline="", encoding="utf-8-sig") as handle:
        unknown = [(line, pid) for line, pid in
                   ((n, (row.get("id") or "").strip()) for n, row in enumerate(csv.DictReader(handle), start=2))
                   if pid and pid not in ids]
    if unknown:
        shown = ", ".join(pid for _, pid in unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise ReviewError(f"{review} line {unknown[0][0]}: {len(unknown)} id(s) not in the catalogue ({shown}): "
                          "apply the suspects of an audit of this same catalogue (same --data and --id-column)")


def _formatted(old: str, category: str) -> str:
    """The new cell in the old one's format: a Flipkart tree ``["A >> B"]`` stays a list."""
    stripped = old.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        return f'["{category}"]'
    return category


def apply_review(data: str | os.PathLike, review: str | os.PathLike, out: str | os.PathLike, *,
                 id_column: str | None = None, label_column: str | None = None) -> ApplyResult:
    """Write to ``out`` a copy of the catalogue ``data`` (CSV or Parquet) whose category is
    replaced in the rows accepted in ``review`` (a reviewed copy of suspects.csv).

    Usage::

        result = apply_review("catalog.csv", "suspects-reviewed.csv", "catalog-corrected.csv")
        print(len(result.changed), "categories corrected")
    """
    catalog = load_catalog(data, id_column=id_column, label_column=label_column, require_labels=True)
    source, review, out = Path(catalog.source), Path(review), Path(out)
    for other, what in ((source, "the catalogue"), (review, "the reviewed suspects")):
        if out.exists() and other.exists() and out.resolve() == other.resolve():
            raise ReviewError(f"--out {out} is {what} itself: give a new file (the original is never written)")
    if out.suffix.lower() != source.suffix.lower() and not (
            out.suffix.lower() in PARQUET_SUFFIXES and source.suffix.lower() in PARQUET_SUFFIXES):
        raise ReviewError(f"--out {out}: give a {source.suffix} file, the format of {source.name}")
    accepted, reviewed = read_review(review)
    _known_ids(review, set(catalog.ids))
    index = {pid: i for i, pid in enumerate(catalog.ids)}
    known = set(catalog.categories)
    result = ApplyResult(out=out, reviewed=reviewed,
                         new_categories=sorted({c for c in accepted.values() if c not in known}))
    label_col = catalog.columns["label"]
    cells = _read_column(source, label_col)
    for pid, category in accepted.items():
        i = index[pid]
        if catalog.labels[i] != category:
            result.changed[pid] = (catalog.labels[i], category)
            cells[i] = _formatted(cells[i], category)
    _write_copy(source, out, label_col, cells)
    return result


def _read_column(source: Path, column: str) -> list[str]:
    if source.suffix.lower() in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        return ["" if v is None else str(v) for v in pq.read_table(source, columns=[column]).column(0).to_pylist()]
    with open(source, newline="", encoding="utf-8-sig") as handle:
        return [row.get(column) or "" for row in csv.DictReader(handle)]


def _write_copy(source: Path, out: Path, column: str, cells: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix.lower() in PARQUET_SUFFIXES:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(source)
        at = table.column_names.index(column)
        table = table.set_column(at, column, pa.array(cells, pa.string()))
        with atomic_writer(out, "wb") as handle:
            pq.write_table(table, handle)
        return
    with open(source, "rb") as handle:
        newline = "\r\n" if b"\r\n" in handle.read(1 << 16) else "\n"  # the original's line ends
    with open(source, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=header, lineterminator=newline)
        writer.writeheader()
        for row, cell in zip(reader, cells):
            row[column] = cell
            writer.writerow(row)
    atomic_write_text(out, buffer.getvalue())
