"""The files of `pm audit`: suspects.csv (with an empty ``accept`` column for the reviewer),
categories.csv (cleanlab's estimated error rate per category), results.json and report.html."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from placedemarche.audit.apply import ACCEPT_COLUMN
from placedemarche.audit.suspects import AuditResult
from placedemarche.core.files import atomic_write_text

SUSPECT_COLUMNS = ("rank", "id", "name", "declared_category", "suggested_category", "quality",
                   "p_declared", "p_suggested", ACCEPT_COLUMN)
CATEGORY_COLUMNS = ("category", "products", "label_issues", "estimated_error_rate", "inverse_label_issues",
                    "label_quality")


def _csv(columns, rows) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_audit_report(result: AuditResult, out: str | Path) -> dict[str, str]:
    """Write the audit's files into the directory ``out``; returns them by kind (also kept in
    ``result.files`` and results.json)."""
    from placedemarche.report.html_audit import write_audit_html

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"suspects": "suspects.csv", "categories": "categories.csv", "results": "results.json"}
    atomic_write_text(out / files["suspects"],
                      _csv(SUSPECT_COLUMNS, [{**s.to_row(), ACCEPT_COLUMN: ""} for s in result.suspects]))
    atomic_write_text(out / files["categories"], _csv(CATEGORY_COLUMNS, result.health))
    files["html"] = write_audit_html(result, out).name
    result.files = files
    atomic_write_text(out / files["results"], json.dumps(result.summary(), indent=2, ensure_ascii=False))
    return files
