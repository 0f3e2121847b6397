"""Catalog, the one product table that flows everywhere, and its CSV/Parquet loaders and checks."""

from __future__ import annotations

import csv
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Literal, Sequence

from placedemarche.core.errors import CatalogError
from placedemarche.data.category_paths import flipkart_category, read_path  # noqa: F401 (flipkart_category: API)

TextField = Literal["name", "description", "both"]
TEXT_FIELDS: tuple[str, ...] = ("name", "description", "both")

#: Columns looked for, in order, when a generic CSV does not name them.
COLUMN_CANDIDATES = {
    "id": ("uniq_id", "id", "foodId", "code"),
    "name": ("product_name", "name", "label"),
    "description": ("description", "foodContentsLabel", "ingredients_text"),
    "image": ("image", "image_path", "image_url"),
    "label": ("category", "product_category_tree", "label_true", "true_category"),
}

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+://")  # s3://, gs://, https://... (kept with keep_urls)
FLIPKART_CSV = "flipkart_com-ecommerce_sample_1050.csv"
IMAGE_DIR_NAMES = ("images", "Images")


@dataclass(frozen=True)
class RowProblem:
    """A row that cannot be used as it is: its id, its 1-based CSV line, and why."""

    row_id: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"row {self.row_id} (line {self.line}): {self.problem}"


@dataclass
class Catalog:
    """Products: ids, texts, image paths and (when known) their true category.

    Every list has one entry per product. ``image_paths`` holds ``None`` where a product
    has no image; ``labels`` is ``None`` for an unlabelled catalogue. ``dropped`` lists the
    rows that validation removed, so reports can say how many and which.
    """

    ids: list[str]
    names: list[str]
    descriptions: list[str]
    image_paths: list[Path | None]  # a URL stays a str when loaded with keep_urls
    labels: list[str] | None = None
    source: str = ""
    lines: list[int] = field(default_factory=list)
    dropped: list[RowProblem] = field(default_factory=list)
    #: role -> CSV column it was read from (None: no such column), as detected or given.
    columns: dict[str, str | None] = field(default_factory=dict)
    #: category paths, top first; labels are them at one level (data/categories.py says which)
    category_paths: list[tuple[str, ...]] | None = None
    category_info: dict = field(default_factory=dict)
    #: the needs this catalogue was validated for: validating again for them reads no image
    validated_for: set = field(default_factory=set, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        columns = {"names": self.names, "descriptions": self.descriptions,
                   "image_paths": self.image_paths}
        if self.labels is not None:
            columns["labels"] = self.labels
        for attr, values in columns.items():
            if len(values) != n:
                raise CatalogError(f"catalogue has {n} ids but {len(values)} {attr}")
        if not self.lines:
            self.lines = list(range(2, n + 2))
        if len(set(self.ids)) != n:
            seen, dupes = set(), []
            for i in self.ids:
                if i in seen:
                    dupes.append(i)
                seen.add(i)
            raise CatalogError(
                f"{self.source or 'catalogue'}: duplicate product ids {', '.join(dupes[:5])}"
                " - ids must be unique"
            )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def categories(self) -> list[str]:
        if self.labels is None:
            return []
        return sorted(set(self.labels))

    def texts(self, text_field: TextField = "both") -> list[str]:
        """The text of each product: its name, its description, or both joined."""
        if text_field == "name":
            return list(self.names)
        if text_field == "description":
            return list(self.descriptions)
        if text_field == "both":
            return [f"{n}. {d}" if n and d else (n or d) for n, d in zip(self.names, self.descriptions)]
        raise CatalogError(f"unknown text field '{text_field}': use one of {', '.join(TEXT_FIELDS)}")

    def subset(self, indices: Iterable[int]) -> "Catalog":
        idx = list(indices)
        return replace(
            self,
            ids=[self.ids[i] for i in idx],
            names=[self.names[i] for i in idx],
            descriptions=[self.descriptions[i] for i in idx],
            image_paths=[self.image_paths[i] for i in idx],
            labels=None if self.labels is None else [self.labels[i] for i in idx], lines=[self.lines[i] for i in idx],
            category_paths=None if self.category_paths is None else [self.category_paths[i] for i in idx],
            dropped=list(self.dropped),
            validated_for=set(),
        )

    def text_columns(self, text_field: TextField = "both") -> list[str]:
        """The CSV columns ``text_field`` reads (known only for catalogues loaded from a file)."""
        roles = {"name": ("name",), "description": ("description",), "both": ("name", "description")}
        return [self.columns[r] for r in roles[text_field] if self.columns.get(r)]

    def text_column_warning(self, text_field: TextField = "both") -> str | None:
        """A one-line warning when ``both`` is asked but only one text column exists."""
        if text_field != "both" or not self.columns:
            return None
        missing = [role for role in ("name", "description") if not self.columns.get(role)]
        if len(missing) != 1:
            return None
        role = missing[0]
        return (f"{self.source or 'catalogue'}: no {role} column (looked for "
                f"{', '.join(COLUMN_CANDIDATES[role])}): the text is the "
                f"{'description' if role == 'name' else 'name'} only; name it with --{role}-column")

    def _check_text_columns(self, text_field: TextField) -> None:
        if not self.columns:
            return  # built in code, not from a file: nothing to check against
        if not self.text_columns(text_field):
            roles = ["name", "description"] if text_field == "both" else [text_field]
            looked = ", ".join(c for r in roles for c in COLUMN_CANDIDATES[r])
            raise CatalogError(
                f"{self.source or 'catalogue'}: no {' or '.join(roles)} column for the text "
                f"(looked for {looked}); name it with --{roles[0]}-column or choose another --text-field"
            )

    # -- validation -------------------------------------------------------------------
    def problems(self, *, text: TextField | None = "both", image: bool = True,
                 labels: bool = False, check_decode: bool = True) -> list[RowProblem]:
        """Rows unusable for the given needs: empty text, missing/unreadable image, no label."""
        found: list[RowProblem] = []
        texts = self.texts(text) if text else None
        for i, row_id in enumerate(self.ids):
            line = self.lines[i]
            if texts is not None and not texts[i].strip():
                what = {"both": "name and description", "name": "name", "description": "description"}[text]
                found.append(RowProblem(row_id, line, f"empty {what}"))
            if image:
                problem = image_problem(self.image_paths[i], check_decode=check_decode)
                if problem:
                    found.append(RowProblem(row_id, line, problem))
            if labels and (self.labels is None or not self.labels[i].strip()):
                found.append(RowProblem(row_id, line, "no category"))
        return found

    def validated(self, *, text: TextField | None = "both", image: bool = True,
                  labels: bool = False, on_missing: Literal["drop", "fail"] = "drop",
                  check_decode: bool = True) -> "Catalog":
        """Return the catalogue without unusable rows, or raise listing them ('fail')."""
        if on_missing not in ("drop", "fail"):
            raise CatalogError(f"unknown on_missing policy '{on_missing}': use drop or fail")
        needs = (text, image, labels, check_decode)
        if needs in self.validated_for:  # the CLI validates, then the evaluator's API call does
            return self
        if text:
            self._check_text_columns(text)
        if image and self.columns and not self.columns.get("image"):
            raise CatalogError(
                f"{self.source or 'catalogue'}: no image column (looked for "
                f"{', '.join(COLUMN_CANDIDATES['image'])}); name it with --image-column"
            )
        found = self.problems(text=text, image=image, labels=labels, check_decode=check_decode)
        if not found:
            self.validated_for.add(needs)
            return self
        if on_missing == "fail":
            listed = "; ".join(str(p) for p in found[:5])
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            raise CatalogError(
                f"{self.source or 'catalogue'}: {len(found)} unusable row(s): {listed}{more}"
                " - fix them or use --on-missing drop"
            )
        bad = {p.row_id for p in found}
        kept = self.subset(i for i, row_id in enumerate(self.ids) if row_id not in bad)
        kept.dropped = list(self.dropped) + found
        kept.validated_for.add(needs)
        if not kept.ids:
            raise CatalogError(f"{self.source or 'catalogue'}: no usable row left after dropping "
                               f"{len(bad)}: {summarise_problems(found)}{self._columns_note(text, image)}")
        return kept

    def _columns_note(self, text: TextField | None, image: bool) -> str:
        if not self.columns:
            return ""
        used = []
        if text:
            used.append(f"text from {', '.join(self.text_columns(text)) or 'no column'}")
        if image:
            used.append(f"images from column {self.columns.get('image')}")
        return f" ({'; '.join(used)})" if used else ""


def problem_kind(problem: str) -> str:
    """What a row problem is, without the file it names: 'image file not found'."""
    return problem.split(":")[0].split(" (")[0].strip()


def summarise_problems(found: Sequence[RowProblem], top: int = 3) -> str:
    """The largest groups of row problems: '400 x no image given, 2 x empty description'."""
    from collections import Counter

    counts = Counter(problem_kind(p.problem) for p in found).most_common()
    shown = ", ".join(f"{n} x {kind}" for kind, n in counts[:top])
    return shown + (f" and {len(counts) - top} other reason(s)" if len(counts) > top else "")


def image_problem(path: Path | None, *, check_decode: bool = True) -> str | None:
    """Why an image cannot be used, or None. Decoding is checked from the file's structure,
    and the size from its header: a decompression bomb is "too large", never decoded."""
    if path is None:
        return "no image given"
    if _is_url(path):
        return None  # read, and checked, by the extractor: an unreadable one is its failed row
    if not path.is_file():
        return f"image file not found: {path}"
    if path.stat().st_size == 0:
        return f"image file is empty: {path}"
    if check_decode:
        from PIL import Image, UnidentifiedImageError

        from placedemarche.data.images import open_image, pixel_limit, too_large

        try:
            # open_image, not Image.open: Pillow's own check would raise without the size, or
            # warn between 1× and 2× its limit (this runs in the download threads too)
            with open_image(path) as im:
                problem = too_large(im.size)
                if problem:
                    return f"{problem}: {path}"
                im.verify()
        except Image.DecompressionBombError:  # a few formats (ICO, DCX...) check their parts themselves
            return f"image too large (more than {pixel_limit()} pixels): {path}"
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            return f"image file cannot be decoded ({type(exc).__name__}): {path}"
    return None


# -- loading ---------------------------------------------------------------------------
def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise CatalogError(f"cannot open catalogue {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = [(reader.line_num, row) for row in reader]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise CatalogError(f"{path}: not a readable UTF-8 CSV file ({exc})") from None
    if not header:
        raise CatalogError(f"{path}: empty file, expected a CSV with a header row")
    return header, rows


PARQUET_SUFFIXES = (".parquet", ".pq")


def _read_parquet(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A Parquet catalogue as :func:`_read_csv` gives a CSV one: every value as text ("" for
    null), row numbers counted like CSV lines (the first row is 2), so messages name rows alike."""
    import pyarrow.parquet as pq

    import pyarrow as pa

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise CatalogError(f"{path}: not a readable Parquet file ({exc})") from None
    header = list(table.column_names)
    if not header:
        raise CatalogError(f"{path}: no column, expected a table with a header")
    columns = {name: ["" if v is None else str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
                      for v in table.column(name).to_pylist()] for name in header}
    rows = [(line, {name: columns[name][i] for name in header})
            for i, line in enumerate(range(2, table.num_rows + 2))]
    return header, rows


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    return _read_parquet(path) if path.suffix.lower() in PARQUET_SUFFIXES else _read_csv(path)


def find_catalog_csv(path: str | os.PathLike) -> Path:
    """Resolve a catalogue argument: a CSV or Parquet file, or a directory holding one (Flipkart
    layout)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for candidate in (p / FLIPKART_CSV, p / "flipkart" / FLIPKART_CSV, p / "Flipkart" / FLIPKART_CSV):
            if candidate.is_file():
                return candidate
        csvs = sorted(p.glob("*.csv")) or sorted(c for c in p.iterdir() if c.suffix.lower() in PARQUET_SUFFIXES)
        if len(csvs) == 1:
            return csvs[0]
        if len(csvs) > 1:
            raise CatalogError(
                f"{p} holds {len(csvs)} CSV files ({', '.join(c.name for c in csvs[:4])}...):"
                " pass the one to use"
            )
        raise CatalogError(f"no catalogue CSV in {p}: pass a CSV file or a directory holding one")
    raise CatalogError(f"catalogue not found: {p}")


def _default_image_dir(csv_path: Path) -> Path:
    for name in IMAGE_DIR_NAMES:
        if (csv_path.parent / name).is_dir():
            return csv_path.parent / name
    return csv_path.parent


def _pick(header: list[str], role: str, given: str | None, path: Path, required: bool) -> str | None:
    if given is not None:
        if given not in header:
            raise CatalogError(
                f"{path}: no column '{given}' for the {role}; columns are: {', '.join(header)}"
            )
        return given
    for candidate in COLUMN_CANDIDATES[role]:
        if candidate in header:
            return candidate
    if required:
        raise CatalogError(
            f"{path}: no {role} column (looked for {', '.join(COLUMN_CANDIDATES[role])});"
            f" name it with --{role}-column. Columns are: {', '.join(header)}"
        )
    return None


def load_catalog(
    path: str | os.PathLike,
    *,
    id_column: str | None = None,
    name_column: str | None = None,
    description_column: str | None = None,
    image_column: str | None = None,
    label_column: str | Sequence[str] | None = None,
    category_separator: str | None = None,
    image_dir: str | os.PathLike | None = None,
    require_labels: bool = False,
    keep_urls: bool = False,
) -> Catalog:
    """Load a catalogue CSV or Parquet file: the Flipkart sample or any table with
    id/text/image/label columns.

    Columns not named are looked for among :data:`COLUMN_CANDIDATES`. The category is a path
    (``category_paths``: a ``product_category_tree``, a column cut at ``category_separator``, or
    label columns, top first); ``labels`` is its first level (others: categories.at_level). Relative image
    paths are resolved against ``image_dir`` (default: an ``images/`` or ``Images/``
    directory beside the CSV). With ``keep_urls``, an image given as a URL (``s3://``,
    ``gs://``, ``https://``...) stays that URL (a string), for extractors that read URLs
    (``pm extract``); else it is read as a local path. Nothing is dropped here: see
    :meth:`Catalog.validated`.

    Usage::

        catalog = load_catalog("shared/data/flipkart").validated(on_missing="drop")
    """
    csv_path = find_catalog_csv(path)
    header, rows = _read_table(csv_path)
    # The label column is picked first and is never a feature: a `label` column is both a
    # category candidate and a product-name candidate, and reading it as the text made
    # the category the feature (ARI 1.0).
    label_cols = [c for g in ([label_column] if isinstance(label_column, str) else list(label_column or [None]))
                  if (c := _pick(header, "label", g, csv_path, required=require_labels))]
    label_col = label_cols[0] if label_cols else None
    given = {"id": id_column, "name": name_column, "description": description_column, "image": image_column}
    for role, column in given.items():
        if column in label_cols and role != "id":
            raise CatalogError(f"{csv_path}: column '{column}' is the category (label) column and "
                               f"cannot also be the {role}: the category would leak into the features")
    usable = [c for c in header if c not in label_cols]
    id_col = _pick(header, "id", id_column, csv_path, required=False)
    name_col = _pick(usable, "name", name_column, csv_path, required=False)
    desc_col = _pick(usable, "description", description_column, csv_path, required=False)
    image_col = _pick(usable, "image", image_column, csv_path, required=False)
    if name_col is None and desc_col is None and image_col is None:
        raise CatalogError(
            f"{csv_path}: no text or image column found (looked for "
            f"{', '.join(COLUMN_CANDIDATES['name'] + COLUMN_CANDIDATES['description'] + COLUMN_CANDIDATES['image'])});"
            f" columns are: {', '.join(header)}"
        )
    images_root = Path(image_dir).expanduser() if image_dir else _default_image_dir(csv_path)
    if image_dir and not images_root.is_dir():
        raise CatalogError(f"image directory not found: {images_root}")

    ids, names, descs, images, paths, lines = [], [], [], [], [], []  # paths: of the categories
    for number, (line, row) in enumerate(rows, start=1):
        ids.append((row.get(id_col) or "").strip() if id_col else str(number))
        if id_col and not ids[-1]:
            ids[-1] = f"line{line}"
        names.append((row.get(name_col) or "").strip() if name_col else "")
        descs.append((row.get(desc_col) or "").strip() if desc_col else "")
        raw_image = (row.get(image_col) or "").strip() if image_col else ""
        images.append(None if not raw_image else raw_image if keep_urls and _is_url(raw_image)
                      else _resolve_image(raw_image, images_root, csv_path.parent))
        if label_col:
            paths.append(read_path(row, label_cols, category_separator))
        lines.append(line)
    return Catalog(
        ids=ids, names=names, descriptions=descs, image_paths=images,
        labels=[p[0] if p else "" for p in paths] if label_col else None, source=str(csv_path), lines=lines,
        columns={"id": id_col, "name": name_col, "description": desc_col, "image": image_col,
                 "label": label_col},
        category_paths=paths if label_col else None, category_info={"columns": label_cols,
                                                                     "separator": category_separator},
    )


def _is_url(value) -> bool:
    return isinstance(value, str) and _URL.match(value) is not None


def _resolve_image(value: str, root: Path, csv_dir: Path) -> Path:
    """Absolute paths as given; relative ones in the image directory, or relative to the CSV
    when they name a file there (``images/123.jpg``, as `pm source run --images` writes)."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    if root != csv_dir and len(p.parts) > 1 and (csv_dir / p).is_file():
        return csv_dir / p
    return root / p
