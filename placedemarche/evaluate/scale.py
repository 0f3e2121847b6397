"""The evaluator's size rules: past which catalogue size it approximates, on which sample, and how.

Exact silhouettes cost time quadratic in the number of products, an exact t-SNE map hours
at a million, k-means restarts on every row minutes, and a page or a plot with a million
points cannot be opened. Past :data:`APPROXIMATE_ABOVE` products the evaluator therefore:

- starts k-means from its restarts on a sample of the rows, then runs it once on every row
  (the ``kmeans`` plugin's ``minibatch_above`` is set to the same threshold, so one number
  decides; ``kmeans:large=minibatch`` or ``exact`` choose otherwise);
- computes the silhouette on a stratified sample of :data:`SAMPLE_SIZE` products (drawn once,
  seed 0, category shares kept; the same sample for every run, space and seed);
- fits the 2-D t-SNE map on that sample and places every other product at the median position
  of its :data:`PLACE_NEIGHBOURS` nearest sample products (openTSNE's "median" placement
  without its optimisation). Measured on resampled Flipkart TF-IDF/LSA (k-means ARI on the
  map): at 50,000 products it placed the 40,000 others in 16 s with ARI 0.264, openTSNE's
  ``transform`` in 40 s with 0.265; at 10,000, a 5,000 sample placed the rest for ARI 0.33 in
  35 s where the full t-SNE took 223 s for 0.26. It costs O(n x sample), linear in n, where a
  full openTSNE (FFT gradients, approximate neighbours) took 598 s at 50,000 already;
- draws maps and report.html points, and picks photo grids, from the sample.

Below the threshold nothing changes: results match earlier evaluations. Every approximation
made is one line of :attr:`EvaluationReport.approximations`, which results.json, report.html
and the terminal show.

Usage::

    from placedemarche.evaluate.scale import plan_for

    plan = plan_for(y)                       # y: the category of each product
    if plan.active:
        print(len(plan.sample), "products sampled of", plan.products)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from placedemarche.core.limits import APPROXIMATE_ABOVE

#: Products in the sample used for the silhouette, the t-SNE fit, plots and report.html.
SAMPLE_SIZE = 10_000
#: Sample neighbours whose median map position places a product outside the sample.
PLACE_NEIGHBOURS = 10


@dataclass(frozen=True)
class ScalePlan:
    """Whether an evaluation of ``products`` approximates, and the sample it uses."""

    products: int
    threshold: int
    sample_size: int
    sample: np.ndarray | None = None  # sorted product indices; None: everything is exact

    @property
    def active(self) -> bool:
        return self.sample is not None

    def describe(self) -> dict[str, int | bool]:
        return {"products": self.products, "approximate_above": self.threshold,
                "sample_size": self.sample_size, "approximated": self.active}


def plan_for(y: np.ndarray, approximate_above: int | None = None, sample_size: int | None = None) -> ScalePlan:
    """The plan for products of categories ``y``: exact up to ``approximate_above`` products
    (default :data:`APPROXIMATE_ABOVE`), else a stratified sample of ``sample_size`` (default
    :data:`SAMPLE_SIZE`). Module constants are read at call time, so tests can lower them."""
    threshold = APPROXIMATE_ABOVE if approximate_above is None else int(approximate_above)
    size = SAMPLE_SIZE if sample_size is None else int(sample_size)
    n = len(y)
    if n <= threshold or size >= n:
        return ScalePlan(n, threshold, size)
    return ScalePlan(n, threshold, size, stratified_sample(y, size, seed=0))


def stratified_sample(y: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """``size`` sorted indices drawn without replacement, each category's share kept (largest
    remainders get the rounding; every category present keeps at least one product)."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    categories, counts = np.unique(y, return_counts=True)
    exact = counts / counts.sum() * size
    take = np.minimum(np.maximum(np.floor(exact).astype(int), 1), counts)
    for c in np.argsort(-(exact - np.floor(exact))):  # hand out what rounding left
        if take.sum() >= size:
            break
        if take[c] < counts[c]:
            take[c] += 1
    picked = [rng.choice(np.flatnonzero(y == category), size=int(k), replace=False)
              for category, k in zip(categories, take)]
    return np.sort(np.concatenate(picked))


def embed_on_sample(X, sample: np.ndarray, embed: Callable, neighbours: int = PLACE_NEIGHBOURS) -> np.ndarray:
    """A 2-D map of every row of ``X``: ``embed`` (t-SNE) on the sample's rows, the other rows
    placed at the median position of their ``neighbours`` nearest sample rows."""
    n = X.shape[0]
    xy = np.empty((n, 2), dtype=np.float32)
    reference = X[sample]
    xy[sample] = np.asarray(embed(reference), dtype=np.float32)
    rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
    if len(rest):
        xy[rest] = place_by_neighbours(reference, xy[sample], X[rest], neighbours)
    return xy


def place_by_neighbours(reference, reference_xy: np.ndarray, X, neighbours: int = PLACE_NEIGHBOURS,
                        chunk: int = 20_000) -> np.ndarray:
    """Each row of ``X`` at the coordinate-wise median of its nearest ``reference`` rows'
    positions; queried in chunks, so memory stays bounded whatever the number of rows."""
    from sklearn.neighbors import NearestNeighbors

    k = min(neighbours, reference.shape[0])
    index = NearestNeighbors(n_neighbors=k).fit(reference)
    placed = np.empty((X.shape[0], 2), dtype=np.float32)
    for start in range(0, X.shape[0], chunk):
        _, found = index.kneighbors(X[start:start + chunk])
        placed[start:start + chunk] = np.median(reference_xy[found], axis=1)
    return placed


def approximations(plan: ScalePlan, map_made: bool, clusterer_notes: dict[str, str]) -> dict[str, str]:
    """One line per approximation made, keyed by what was approximated (empty when exact)."""
    notes = {f"clusterer {spec}": note for spec, note in clusterer_notes.items()}
    if not plan.active:
        return notes
    sampled = f"stratified sample of {len(plan.sample)} of {plan.products} products (seed 0)"
    notes["silhouette"] = f"on a {sampled}"
    if map_made:
        notes["map"] = (f"t-SNE fitted on a {sampled}; the others placed at the median of their "
                        f"{PLACE_NEIGHBOURS} nearest sampled products")
    notes["plots"] = f"maps, photo grids and report.html points drawn from the {sampled}"
    return notes
