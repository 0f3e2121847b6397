"""Prediction on a new catalogue: :func:`predict_catalog` writes one row per product (category,
probability, top-k, the modality used, and why a text or image was not used)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from placedemarche.features.cache import FeatureCache
from placedemarche.data.catalog import Catalog
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.classify.hierarchy import answer_paths
from placedemarche.classify.model import ClassifierModel

# A few image files not found are left to each row's note; more than this many, or more
# than this share of the products, usually means the images were looked for in the wrong
# directory, which the CLI says once.
MISSING_IMAGES_COUNT = 3
MISSING_IMAGES_SHARE = 0.05


@dataclass
class PredictionResult:
    """What :func:`predict_catalog` returns: the rows written to the CSV and what to tell."""

    rows: list[dict[str, Any]]
    columns: list[str]
    counts: dict[str, int]  # modality used -> products
    accuracy: float | None = None  # when the catalogue carries true categories
    group: str = ""  # the group asked for (products lacking its modalities use what they have)
    missing_images: int = 0  # products whose image file, needed by the model, was not found
    missing_image_dir: str | None = None  # the directory where most of those were looked for

    @property
    def many_images_missing(self) -> bool:
        """More image files not found than a few lost photos explain."""
        return (self.missing_images > MISSING_IMAGES_COUNT
                or self.missing_images > MISSING_IMAGES_SHARE * len(self.rows))


def predict_catalog(model: ClassifierModel, catalog: Catalog, *, top_k: int = 1,
                    cache: FeatureCache | None = None, out: str | Path | None = None,
                    group: str | None = None) -> PredictionResult:
    """Predict every product of ``catalog``; write a CSV to ``out`` when given.

    Each row has the product id and name, the predicted category and its probability (and
    the next ``top_k - 1``), the modality the prediction used, and a note saying why a text
    or image was not used (``image file not found: /x/y.jpg; predicted from text``). A
    product with neither a usable text nor a usable image is kept with an empty category.
    ``group`` picks the group that predicts (default: the model's, the best on its folds).
    A model trained below the first level of the category tree adds ``path`` and ``level``: the
    predicted path down to the deepest level whose probability reaches that level's decision
    threshold, and that level (0 and an empty path: not even the first level is sure).
    The result counts the image files not found, so a caller can say when many are missing.
    """
    if top_k < 1:
        raise PlaceDeMarcheError(f"--top-k must be 1 or more, got {top_k}")
    if len(catalog) == 0:
        raise PlaceDeMarcheError(f"{catalog.source or 'catalogue'} is empty: nothing to predict")
    top_k = min(top_k, len(model.categories))
    group = model.resolve_group(group)
    proba, used = model.predict_details(catalog, cache, group)
    paths = answer_paths(model, proba, used)
    columns = ["id", "name", "category", "probability", *(["path", "level"] if paths is not None else []),
               "modality"]
    for k in range(2, top_k + 1):
        columns += [f"category_{k}", f"probability_{k}"]
    if catalog.labels is not None:
        columns.append("true_category")
    columns.append("note")
    rows = []
    problems = model.problems(catalog)
    not_found: list[Path] = []
    for i in range(len(catalog)):
        row: dict[str, Any] = {"id": catalog.ids[i], "name": catalog.names[i], "modality": used[i]}
        notes = [reasons[i] for reasons in problems.values() if reasons[i] is not None]
        if notes:
            notes.append("nothing to predict from" if used[i] == "none" else f"predicted from {used[i]}")
        image = problems.get("image", [None] * len(catalog))[i]
        # an image is needed when the group uses images, or when the product has no text
        needed = "image" in group.split("+") or problems.get("text", [None] * len(catalog))[i] is not None
        if image is not None and needed and image.startswith("image file not found"):
            not_found.append(catalog.image_paths[i])
        if np.isnan(proba[i]).all():
            row.update(category="", probability="")
            for k in range(2, top_k + 1):
                row.update({f"category_{k}": "", f"probability_{k}": ""})
        else:
            order = np.argsort(-proba[i])
            row.update(category=model.categories[order[0]], probability=round(float(proba[i, order[0]]), 4))
            for k in range(2, top_k + 1):
                row.update({f"category_{k}": model.categories[order[k - 1]],
                            f"probability_{k}": round(float(proba[i, order[k - 1]]), 4)})
        if paths is not None:
            row.update(path=paths[i][0], level=paths[i][1])
        if catalog.labels is not None:
            row["true_category"] = catalog.labels[i]
        row["note"] = "; ".join(notes)
        rows.append(row)
    counts: dict[str, int] = {}
    for u in used:
        counts[u] = counts.get(u, 0) + 1
    accuracy = None
    if catalog.labels is not None:
        scored = [r for r in rows if r["category"] and r["true_category"]]
        if scored:
            accuracy = sum(r["category"] == r["true_category"] for r in scored) / len(scored)
    where = Counter(str(p.parent) for p in not_found).most_common(1)
    result = PredictionResult(rows, columns, counts, accuracy, group=group, missing_images=len(not_found),
                              missing_image_dir=where[0][0] if where else None)
    if out is not None:
        from placedemarche.core.files import atomic_write_text

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(Path(out), buffer.getvalue())
    return result
