"""The clusterers of an evaluation: each one's class and parameters, what it approximates at a
given size, and the dense matrix given to those without sparse support.

Usage::

    from placedemarche.evaluate.clusterer_plans import clusterer_plans

    plans = clusterer_plans(["kmeans", "hdbscan"], k=7, threshold=20_000)
"""

from __future__ import annotations

from typing import Any, Sequence

from placedemarche.core.plugins import get_plugin_class, parse_plugin_spec
from placedemarche.core.limits import check_densify


def clusterer_plans(specs: Sequence[str], k: int, threshold: int) -> list[tuple[type, dict[str, Any]]]:
    """Each clusterer's class and parameters, k included where it takes one, and the
    evaluator's size threshold where it has one (``kmeans``' ``minibatch_above``); the seed is
    added per job. Classes (not names) go to the workers, so a clusterer registered at run
    time works in them too."""
    plans = []
    for spec in specs:
        name, params = parse_plugin_spec(spec)
        cls = get_plugin_class("clusterer", name)
        cls.require()
        if cls.needs_n_clusters:
            params.setdefault("n_clusters", k)
        if "minibatch_above" in cls._get_param_names():
            params.setdefault("minibatch_above", threshold)
        cls.check_params(params)
        plans.append((cls, params))
    return plans


def clusterer_notes(specs: Sequence[str], plans, rows: int) -> dict[str, str]:
    """What each clusterer approximates at this many rows (its ``approximation(rows)``, if any)."""
    notes = {}
    for spec, (cls, params) in zip(specs, plans):
        note = getattr(cls.create(**params), "approximation", lambda rows: None)(rows)
        if note:
            notes[spec] = note
    return notes


def dense_for(X, clusterer: str):
    """A dense array for clusterers without sparse support (the raw TF-IDF space, n x
    vocabulary), refused with one line when it would not fit in memory."""
    import scipy.sparse

    if not scipy.sparse.issparse(X):
        return X
    check_densify(X.shape, f"clusterer {clusterer}")
    return X.toarray()
