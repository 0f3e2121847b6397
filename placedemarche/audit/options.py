"""How `pm audit` finds suspects beyond the classifier's settings: :class:`AuditOptions` and
cleanlab's choices it accepts (a light module: the CLI reads its choices without importing
numpy or the classifier)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from placedemarche.core.errors import PlaceDeMarcheError

#: How the suspects are chosen: ``lowest_quality`` (the products of lowest ``rank_by`` label
#: quality, as many as cleanlab's calibrated estimate of the label issues,
#: ``count.num_label_issues(estimation_method="off_diagonal_calibrated")``), or one of
#: cleanlab's ``find_label_issues(filter_by=)`` rules.
FILTERS = ("lowest_quality", "prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
           "low_normalized_margin", "low_self_confidence")
#: cleanlab's label-quality scores (``get_label_quality_scores(method=)``).
RANKINGS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


@dataclass
class AuditOptions:
    """How suspects are found, beyond the classifier's :class:`TrainConfig`.

    Attributes:
        group: the prediction whose probabilities are audited (``text``, ``image``,
            ``text+image``); None: the best group of the cross-validation.
        repeats: the k-fold is run this many times with seeds ``seed``, ``seed+1``, ... and the
            out-of-fold probabilities averaged: every product is predicted by ``repeats``
            models that never saw it, which steadies the probabilities near the boundary. 3
            (default) lifted the worst seed's precision from 0.80 to 0.84 in bench/bench_audit.py,
            at three times the k-fold's time.
        filter_by: how suspects are chosen. ``lowest_quality`` (default): the products of lowest
            ``rank_by`` label quality across the whole catalogue, as many as cleanlab's calibrated
            count of label issues (``count.num_label_issues(estimation_method=
            "off_diagonal_calibrated")``, the cut-off cleanlab documents for its ranking scores);
            it had the best precision *and* recall of every rule in bench/bench_audit.py
            (docs/audit.md). Otherwise a ``find_label_issues`` rule: ``prune_by_class`` (flag, per
            declared category, as many products as the confident joint estimates wrong),
            cleanlab's own default ``prune_by_noise_rate``, ...
        rank_by: cleanlab's label-quality score that orders the suspects.
    """

    group: str | None = None
    repeats: int = 3
    filter_by: str = "lowest_quality"
    rank_by: str = "self_confidence"

    def check(self) -> None:
        if self.repeats < 1:
            raise PlaceDeMarcheError(f"--repeats must be at least 1, got {self.repeats}")
        if self.filter_by not in FILTERS:
            raise PlaceDeMarcheError(f"unknown --filter-by '{self.filter_by}': use one of {', '.join(FILTERS)}")
        if self.rank_by not in RANKINGS:
            raise PlaceDeMarcheError(f"unknown --rank-by '{self.rank_by}': use one of {', '.join(RANKINGS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "repeats": self.repeats, "filter_by": self.filter_by, "rank_by": self.rank_by}
