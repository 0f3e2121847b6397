"""A model as the service holds it (:class:`LoadedModel`): the classifier, its id and checksum,
and the probability threshold above which each modality group's answers are ``auto``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from placedemarche.classify import MODEL_FILE, ClassifierModel, load_model
from placedemarche.classify.hierarchy import level_thresholds
from placedemarche.classify.threshold import describe, threshold_for

NO_DECISION = ("{directory} records no decision threshold (trained before pm train measured one): every answer "
               "is 'review'; train the model again to measure one")


@dataclass
class LoadedModel:
    model: ClassifierModel
    directory: Path
    model_id: str
    checksum: str | None
    trained: str | None
    loaded: str
    decision: dict[str, Any] | None  # the point answers use for the default group (None: none measured)
    thresholds: dict[str, float] = field(default_factory=dict)  # modality group -> threshold
    notes: list[str] = field(default_factory=list)  # what the operator should know (logged at start)
    # modality group -> threshold per level of the category tree (a model below level 1)
    level_thresholds: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def decision_summary(self) -> str:
        if self.decision is None:
            return "no decision threshold in this model: every answer is 'review' (train it again to measure one)"
        return describe(self.decision)


def load_for_serving(directory: str | Path, target_precision: float | None = None) -> LoadedModel:
    """Load ``directory`` with :func:`placedemarche.classify.load_model` (same checks, same
    one-line errors as ``pm predict``) and pick the decision thresholds: the ones ``pm train``
    stored, or with ``target_precision`` the points of the stored risk-coverage curves that
    reach it."""
    directory = Path(directory)
    model = load_model(directory)
    meta = json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
    objects = (meta.get("files") or {}).get("objects") or "model.joblib"
    checksum = (meta.get("sha256") or {}).get(objects)
    model_id = f"{directory.resolve().name}-{(checksum or 'unchecked')[:12]}"
    stored = model.metrics.get("decision")
    notes: list[str] = []
    thresholds: dict[str, float] = {}
    decision = None
    if not isinstance(stored, dict) or "threshold" not in stored:
        notes.append(NO_DECISION.format(directory=directory))
    else:
        by_group = stored.get("by_group") or {stored.get("group") or model.group: stored}
        for group, point in by_group.items():
            if target_precision is not None:
                point = {**threshold_for(point.get("curve") or {}, target_precision), "curve": point.get("curve")}
            if point.get("threshold") is not None:
                thresholds[group] = float(point["threshold"])
            if group == (stored.get("group") or model.group):
                decision = {k: v for k, v in point.items() if k != "curve"} | {"group": group}
        if decision is None:  # the stored group is not among by_group's: keep the top level point
            decision = {k: v for k, v in stored.items() if k not in ("curve", "by_group")}
        if decision.get("precision") is None:
            notes.append(f"{directory}: {describe(decision)}")
    return LoadedModel(model=model, directory=directory, model_id=model_id, checksum=checksum,
                       trained=meta.get("created"), loaded=time.strftime("%Y-%m-%dT%H:%M:%S"),
                       decision=decision, thresholds=thresholds, notes=notes,
                       level_thresholds=level_thresholds(stored, target_precision))


def model_info(loaded: LoadedModel, feedback: bool) -> dict[str, Any]:
    """What ``GET /v1/model`` answers."""
    model = loaded.model
    group = model.group
    results = (model.metrics.get("results") or {}).get(group) or {}
    accuracy = results.get("accuracy_mean")
    extractors = {}
    for key, block in model.blocks.items():
        entry: dict[str, Any] = {"kind": block.kind, "spec": block.spec, "fine_tuned": block.network is not None}
        backend = getattr(block.extractor, "runtime_backend", None)
        if callable(backend):
            try:
                entry["backend"] = backend()
            except Exception:  # noqa: BLE001 - reported as unknown; predictions would say why
                entry["backend"] = None
        extractors[key] = entry
    decision = dict(loaded.decision or {})
    return {
        "model_id": loaded.model_id,
        "directory": loaded.directory.resolve().name,
        "categories": list(model.categories),
        "modalities": list(model.config.modalities),
        "extractors": extractors,
        "head": model.config.classifier,
        "group": group,
        "cv_accuracy": None if accuracy is None else float(accuracy),
        "decision": {key: decision.get(key) for key in ("group", "target_precision", "threshold", "coverage",
                                                        "precision")}
                    | {"thresholds": loaded.thresholds, "summary": loaded.decision_summary},
        "trained": loaded.trained,
        "checksum": loaded.checksum,
        "loaded": loaded.loaded,
        "feedback": feedback,
    }
