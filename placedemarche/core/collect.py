"""Running a source: write its records page by page, safely, and fetch product images.

Each page is appended to the output in one write followed by flush + fsync, then a small
state file (``<out>.state.json``, replaced atomically) records the pages and bytes done. A
failure on page N therefore keeps pages 1..N-1 intact; ``resume=True`` truncates any partial
write past the recorded size and continues at page N.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .base import Source
from .errors import SourceError
from .progress import task
from .report import atomic_write_text

STUDY_COLUMNS = ("foodId", "label", "category", "foodContentsLabel", "image")


@dataclass
class CollectSummary:
    out: Path
    products: int = 0
    pages: int = 0
    retries: int = 0
    images: int = 0
    skipped_images: list[str] = field(default_factory=list)
    resumed_from_page: int = 1
    complete: bool = False


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state.json")


def _format(out: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    return "jsonl" if out.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"


def _value(record: dict, source: Source, column: str) -> Any:
    return record.get(source.columns.get(column, column), "")


def _render(rows: list[dict], columns: Sequence[str], fmt: str, header: bool) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return value


def collect(source: Source, query: str, out: str | os.PathLike, *, limit: int | None = None,
            fields: Sequence[str] | None = None, fmt: str | None = None, resume: bool = False,
            images_dir: str | os.PathLike | None = None, image_timeout: float = 30.0) -> CollectSummary:
    """Query ``source`` and write up to ``limit`` records to ``out`` (CSV or JSON lines).

    ``fields`` are output columns: the study columns (mapped through ``source.columns``) or
    raw record keys. With ``images_dir`` each product image is downloaded there and the
    ``image`` column holds its path relative to ``out`` (the URL moves to ``image_url``).
    Raises SourceError on failure, after everything fetched so far has been written.

    Usage::

        summary = collect(create_plugin("source", "openfoodfacts"), "champagne", "out.csv", limit=10)
    """
    source.check()
    out = Path(out)
    fmt = _format(out, fmt)
    columns = list(fields or STUDY_COLUMNS)
    images = Path(images_dir) if images_dir else None
    if images is not None and "image" in columns and "image_url" not in columns:
        columns.append("image_url")
    state_file = _state_path(out)
    identity = {"source": source.name, "query": query, "columns": columns, "format": fmt,
                "params": {k: v for k, v in source.get_params().items() if "key" not in k}}
    summary = CollectSummary(out)
    start_page = 1
    if resume:
        if not state_file.is_file():
            raise SourceError(f"nothing to resume: {state_file} not found (run without --resume)")
        state = json.loads(state_file.read_text())
        if {k: state.get(k) for k in identity} != identity:
            raise SourceError(f"{out} was collected with other settings ({state.get('source')}, "
                              f"query {state.get('query')!r}, columns {state.get('columns')}): "
                              "resume with the same ones, or write to another file")
        if state.get("complete"):
            summary.products, summary.pages, summary.complete = state["products"], state["pages"], True
            return summary
        with open(out, "r+b") as handle:  # drop a page half-written when the run stopped
            handle.truncate(state["bytes"])
        start_page = state["pages"] + 1
        summary.products, summary.pages = state["products"], state["pages"]
        summary.resumed_from_page = start_page
    elif out.exists() or state_file.exists():
        raise SourceError(f"{out} already exists: choose another -o, delete it, or use --resume")
    out.parent.mkdir(parents=True, exist_ok=True)
    if images is not None:
        images.mkdir(parents=True, exist_ok=True)

    def save_state(complete: bool) -> None:
        atomic_write_text(state_file, json.dumps({
            **identity, "pages": summary.pages, "products": summary.products,
            "bytes": out.stat().st_size if out.exists() else 0, "complete": complete}, indent=2))

    if not resume:
        out.touch()
        save_state(False)
    remaining = None if limit is None else max(0, limit - summary.products)
    try:
        with task(f"{source.name}: products", total=limit) as bar:
            bar.advance(summary.products)
            if remaining == 0:
                pages = iter(())
            else:
                pages = source.pages(query, start_page=start_page)
            for page in pages:
                records = page.records if remaining is None else page.records[:remaining]
                rows = []
                for record in records:
                    row = {c: _value(record, source, c) for c in columns}
                    if images is not None and "image" in columns:
                        row["image_url"] = row["image"]
                        row["image"] = _download_image(row["image_url"], _value(record, source, "foodId"),
                                                       images, out, summary, source, image_timeout)
                    rows.append(row)
                text = _render(rows, columns, fmt, header=summary.pages == 0 and fmt == "csv")
                with open(out, "a", encoding="utf-8", newline="") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
                summary.pages += 1
                summary.products += len(rows)
                save_state(False)
                bar.advance(len(rows))
                if remaining is not None:
                    remaining -= len(rows)
                    if remaining <= 0:
                        break
                if page.last:
                    break
    except SourceError as exc:
        summary.retries = source.retries()
        raise SourceError(
            f"{exc}; {summary.pages} page(s), {summary.products} product(s) kept in {out}: "
            "run the same command with --resume to continue") from None
    summary.retries = source.retries()
    summary.complete = True
    save_state(True)
    return summary


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "image"


def _download_image(url: str, product_id: Any, images: Path, out: Path, summary: CollectSummary,
                    source: Source, timeout: float) -> str:
    import requests

    if not url:
        summary.skipped_images.append(f"{product_id}: no image URL")
        return ""
    suffix = Path(url.split("?")[0]).suffix.lower()
    suffix = suffix if suffix in (".jpg", ".jpeg", ".png", ".webp", ".gif") else ".jpg"
    target = images / f"{_safe_name(str(product_id))}{suffix}"
    try:
        if not target.is_file():
            response = requests.get(url, timeout=timeout,
                                    headers={"User-Agent": getattr(source, "user_agent", "placedemarche")})
            if response.status_code >= 400 or not response.content:
                raise OSError(f"HTTP {response.status_code}")
            tmp = target.with_name(f".{target.name}.part")
            tmp.write_bytes(response.content)
            os.replace(tmp, target)
        summary.images += 1
    except (OSError, requests.RequestException) as exc:
        summary.skipped_images.append(f"{product_id}: {type(exc).__name__} {str(exc)[:80]}")
        return ""
    return os.path.relpath(target, out.parent)
