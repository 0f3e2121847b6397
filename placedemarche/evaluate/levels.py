"""Clustering scores at the levels above the one evaluated: the clusters of a level-2 run
(k = categories at level 2) scored against the level-1 categories too, so a run that splits
the right branches but mixes their leaves shows it."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from placedemarche.data.categories import coarser
from placedemarche.evaluate.results import RunResult


def add_level_scores(runs: Sequence[RunResult], categories: Sequence[str], y: np.ndarray, level: int) -> None:
    """Add ``ari_level{l}`` and ``nmi_level{l}`` to every seed's scores of every space, for each
    level ``l`` above ``level`` (nothing at level 1). Products left in no cluster (noise) count
    as one more cluster here."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    for up in range(1, level):
        names = np.array(coarser(categories, up))[y]
        for run in runs:
            for space, result in run.spaces.items():
                per_seed = run.assignments.get(space, {})
                for seed, scores in zip(result.seeds, result.per_seed):
                    clusters = per_seed.get(seed)
                    if clusters is None:
                        continue
                    scores[f"ari_level{up}"] = float(adjusted_rand_score(names, clusters))
                    scores[f"nmi_level{up}"] = float(normalized_mutual_info_score(names, clusters))

