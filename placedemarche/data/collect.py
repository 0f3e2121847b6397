"""Running a source: write its records page by page, safely, and fetch product images.

Each page is appended to the output in one write followed by flush + fsync, then a small
state file (``<out>.state.json``, replaced atomically) records the pages, products, ids and
bytes done. A failure or an interruption on page N therefore keeps pages 1..N-1 intact;
``resume=True`` truncates any partial write past the recorded size and continues at page N.
A run that fails before its first page is written leaves no file behind: there is nothing to
resume.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from placedemarche.core.base import Source
from placedemarche.core.errors import SourceError
from placedemarche.core.files import atomic_write_text
from placedemarche.data.http import RetryListener, describe_failure, reporting_retries
from placedemarche.core.progress import task

#: The columns of the original study's "Resultat_script_python.csv".
STUDY_COLUMNS = ("foodId", "label", "category", "foodContentsLabel", "image")
FORMATS = ("csv", "jsonl")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")


@dataclass
class CollectSummary:
    """What a run did, for the closing summary (and ``<out>.state.json``)."""

    out: Path
    products: int = 0
    pages: int = 0
    retries: int = 0
    waited: float = 0.0
    duplicates: int = 0
    images: int = 0
    skipped_images: list[str] = field(default_factory=list)
    resumed_from_page: int = 1
    complete: bool = False


def state_path(out: str | os.PathLike) -> Path:
    """Where the progress of a run writing ``out`` is recorded."""
    out = Path(out)
    return out.with_name(out.name + ".state.json")


def output_format(out: str | os.PathLike, fmt: str | None = None) -> str:
    """``fmt`` if given, else from the suffix: ``.jsonl``/``.ndjson``/``.json`` are JSON lines."""
    if fmt:
        if fmt not in FORMATS:
            raise SourceError(f"unknown output format '{fmt}': use {' or '.join(FORMATS)}")
        return fmt
    return "jsonl" if Path(out).suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"


def _key(source: Source, column: str) -> str:
    return source.columns.get(column, column)


def _value(record: dict, source: Source, column: str) -> Any:
    value = record.get(_key(source, column), "")
    return "" if value is None else value


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return value


def _render(rows: list[dict], columns: Sequence[str], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _header(columns: Sequence[str], fmt: str) -> str:
    if fmt != "csv":
        return ""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(columns)
    return buffer.getvalue()


def _append(out: Path, text: str) -> None:
    with open(out, "a", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _check_fields(source: Source, columns: Sequence[str]) -> None:
    if not source.record_keys:  # a source that does not declare its keys: trust the caller
        return
    known = set(STUDY_COLUMNS) | set(source.columns.values()) | set(source.record_keys) | {"image_url"}
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise SourceError(
            f"{source.name} has no field {', '.join(map(repr, unknown))}: choose among "
            f"{', '.join(STUDY_COLUMNS)}, {', '.join(k for k in source.record_keys if k not in STUDY_COLUMNS)}")


def collect(source: Source, query: str, out: str | os.PathLike, *, limit: int | None = None,
            fields: Sequence[str] | None = None, fmt: str | None = None, resume: bool = False,
            images_dir: str | os.PathLike | None = None, image_timeout: float = 30.0,
            image_workers: int = 8, on_retry: RetryListener | None = None) -> CollectSummary:
    """Query ``source`` and write up to ``limit`` records to ``out`` (CSV or JSON lines).

    ``fields`` are output columns: the study columns (mapped through ``source.columns``) or
    raw record keys. Products whose id was already written (APIs repeat some across pages)
    are skipped. With ``images_dir`` each product image is downloaded there and the
    ``image`` column holds its path relative to ``out``'s directory (the URL moves to
    ``image_url``), so ``load_catalog(out)`` finds the pictures; ``image_workers`` images
    of a page download at once. ``on_retry`` is called with a
    :class:`~placedemarche.data.http.RetryNotice` before each retry of an HTTP source, as it
    happens. Raises SourceError on failure or interruption, after everything fetched so far
    has been written, with the way to resume in its message; when no page was written, the
    output and its state file are removed instead (there is nothing to resume).

    Usage::

        source = create_plugin("source", "openfoodfacts")
        summary = collect(source, "champagne", "champagne.csv", limit=10, images_dir="images")
    """
    source.check()
    out = Path(out)
    fmt = output_format(out, fmt)
    columns = list(fields or STUDY_COLUMNS)
    _check_fields(source, columns)
    images = Path(images_dir) if images_dir else None
    if images is not None and "image" in columns and "image_url" not in columns:
        columns.append("image_url")
    state_file = state_path(out)
    identity = {"source": source.name, "query": query, "columns": columns, "format": fmt,
                "params": {k: v for k, v in source.get_params().items() if "key" not in k}}
    summary = CollectSummary(out)
    seen: set[str] = set()
    if resume:
        state = _resume_state(out, state_file, identity)
        summary.products, summary.pages = state["products"], state["pages"]
        summary.duplicates = state.get("duplicates", 0)
        seen = set(state.get("ids", []))
        if state.get("complete"):
            summary.complete = True
            return summary
        summary.resumed_from_page = summary.pages + 1
    elif out.exists() or state_file.exists():
        raise SourceError(f"{out} already exists: choose another -o, delete it "
                          f"(and {state_file.name}), or add --resume to continue it")
    out.parent.mkdir(parents=True, exist_ok=True)
    made_images_dir = images is not None and not images.exists()
    if images is not None:
        images.mkdir(parents=True, exist_ok=True)

    def save_state(complete: bool) -> None:
        atomic_write_text(state_file, json.dumps({
            **identity, "pages": summary.pages, "products": summary.products,
            "duplicates": summary.duplicates, "bytes": out.stat().st_size, "complete": complete,
            "ids": sorted(seen)}, ensure_ascii=False, indent=1))

    if not resume:
        out.write_text(_header(columns, fmt), encoding="utf-8")
        save_state(False)
    remaining = None if limit is None else max(0, limit - summary.products)
    downloader = None
    if images is not None and "image" in columns:
        downloader = _ImageDownloader(images, out, summary, getattr(source, "user_agent", "placedemarche"),
                                      image_timeout, image_workers)
    try:
        with ExitStack() as bars:
            bars.enter_context(reporting_retries(on_retry) if on_retry is not None else nullcontext())
            pages_bar = bars.enter_context(task(f"{source.name} '{query}': pages"))
            products_bar = None
            pages = iter(()) if remaining == 0 else source.pages(query, start_page=summary.pages + 1)
            for page in pages:
                if products_bar is None:  # opened once the API has said how many there are
                    total = page.total if limit is None else min(limit, page.total or limit)
                    products_bar = bars.enter_context(task(f"{source.name}: products", total=total))
                    products_bar.advance(summary.products)
                rows, row_ids = [], []
                for record in page.records:
                    if remaining is not None and len(rows) >= remaining:
                        break
                    product_id = str(_value(record, source, "foodId"))
                    if product_id and product_id in seen:
                        summary.duplicates += 1
                        continue
                    rows.append({c: _value(record, source, c) for c in columns})
                    row_ids.append(product_id or f"p{summary.products + len(rows)}")
                    if product_id:
                        seen.add(product_id)
                    if downloader is None:
                        products_bar.advance(1)
                if downloader is not None:
                    downloader.fetch_page(rows, row_ids, products_bar)
                _append(out, _render(rows, columns, fmt))
                summary.pages += 1
                summary.products += len(rows)
                save_state(False)
                pages_bar.advance(1)
                if remaining is not None:
                    remaining -= len(rows)
                    if remaining <= 0:
                        break
                if page.last:
                    break
    except (SourceError, KeyboardInterrupt) as exc:
        summary.retries, summary.waited = source.retries(), source.waited()
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        if summary.pages == 0:  # only a header: a file to delete and a --resume that gains nothing
            out.unlink(missing_ok=True)
            state_file.unlink(missing_ok=True)
            if made_images_dir:
                _remove_if_empty(images)
            raise SourceError(f"{what}; nothing was written") from None
        raise SourceError(
            f"{what}; {summary.pages} page(s), {summary.products} product(s) kept in {out}: "
            "run the same command with --resume to continue") from None
    finally:
        if downloader is not None:
            downloader.close()
    summary.retries, summary.waited = source.retries(), source.waited()
    summary.complete = True
    save_state(True)
    return summary


def _resume_state(out: Path, state_file: Path, identity: dict) -> dict:
    """Read the state of an earlier run and cut ``out`` back to its last complete page."""
    if not state_file.is_file():
        raise SourceError(f"nothing to resume: {state_file} not found (run without --resume)")
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        recorded = int(state["bytes"])
    except (ValueError, KeyError, TypeError):
        raise SourceError(f"{state_file} is damaged: delete {out} and it, then run again") from None
    if {k: state.get(k) for k in identity} != identity:
        raise SourceError(f"{out} was collected with other settings ({state.get('source')}, "
                          f"query {state.get('query')!r}, columns {state.get('columns')}): "
                          "resume with the same ones, or write to another file")
    size = out.stat().st_size if out.is_file() else -1
    if size < recorded:
        raise SourceError(f"{out} is shorter than its {state_file.name} records ({size} < {recorded} "
                          "bytes): it was changed since; delete both and run again")
    if not state.get("complete"):
        with open(out, "r+b") as handle:  # drop a page half-written when the run stopped
            handle.truncate(recorded)
    return state


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # not empty (images of an earlier run): keep it


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:80]


class _ImageDownloader:
    """Downloads product images into a directory; a failure is recorded and skipped."""

    def __init__(self, images: Path, out: Path, summary: CollectSummary, user_agent: str,
                 timeout: float, workers: int):
        import requests
        from requests.adapters import HTTPAdapter

        self.images = images
        self.out = out
        self.summary = summary
        self.timeout = timeout
        self.workers = max(1, workers)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        # one quick retry for a dropped connection; a pool as large as the worker count
        adapter = HTTPAdapter(max_retries=1, pool_maxsize=self.workers)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def fetch_page(self, rows: list[dict], row_ids: list[str], bar) -> None:
        """Download the images of one page's rows at once; set ``image`` to the local path
        (relative to the output's directory) or "" and ``image_url`` to the URL."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        for row in rows:
            row["image_url"] = row["image"]
        problems: dict[int, str] = {}
        with ThreadPoolExecutor(self.workers) as pool:
            futures = {pool.submit(self._fetch, str(row["image_url"]), product_id): i
                       for i, (row, product_id) in enumerate(zip(rows, row_ids))}
            for future in as_completed(futures):  # progress and the summary: main thread only
                i = futures[future]
                rows[i]["image"], problem = future.result()
                if problem:
                    problems[i] = problem
                else:
                    self.summary.images += 1
                bar.advance(1)
        self.summary.skipped_images.extend(problems[i] for i in sorted(problems))

    def _fetch(self, url: str, product_id: str) -> tuple[str, str]:
        import requests

        if not url:
            return "", f"{product_id}: no image URL"
        suffix = Path(url.split("?")[0]).suffix.lower()
        target = self.images / f"{_safe_name(product_id) or 'image'}{suffix if suffix in IMAGE_SUFFIXES else '.jpg'}"
        if not target.is_file():  # else kept from an earlier, interrupted run
            tmp = target.with_name(f".{target.name}.part")
            try:
                response = self.session.get(url, timeout=self.timeout)
                if response.status_code >= 400:
                    raise OSError(f"HTTP {response.status_code}")
                tmp.write_bytes(response.content)
                problem = _image_problem(tmp)
                if problem:
                    raise OSError(problem)
                os.replace(tmp, target)
            except (OSError, requests.RequestException) as exc:
                tmp.unlink(missing_ok=True)
                return "", f"{product_id}: {_short(exc, url)} ({url})"
        return os.path.relpath(target, self.out.parent), ""


def _image_problem(path: Path) -> str:
    """Why a downloaded image cannot be used, without the temporary file's path; "" if usable.

    Pillow refuses an image declaring more than twice ``MAX_IMAGE_PIXELS`` (a 1 MB PNG can
    declare 20000x20000 pixels, gigabytes once decoded) with DecompressionBombError, which is
    no OSError: let through, it failed the whole page at every --resume.
    """
    from PIL import Image

    from placedemarche.data.catalog import image_problem

    try:
        problem = image_problem(path) or ""
    except Image.DecompressionBombError as exc:
        # Pillow's message gives the count: "Image size (181629529 pixels) exceeds limit of ..."
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels, " if found else ""
        return f"image too large ({pixels}over Pillow's decompression-bomb limit)"
    return problem.split(":")[0]


def _short(exc: Exception, url: str) -> str:
    import requests

    if isinstance(exc, requests.RequestException):
        return describe_failure(exc, url).reason
    return str(exc).replace("\n", " ")
