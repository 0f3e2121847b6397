"""The evaluator's settings and results: EvaluationConfig, SpaceResult, RunResult and
EvaluationReport, with the JSON form results.json is written from."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from placedemarche.data.catalog import Catalog, TextField
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.evaluate.fusion import SCALINGS, TSNE_INPUTS
from placedemarche.evaluate.metrics import METRICS

Space = Literal["raw", "reduced", "tsne"]
SPACES: tuple[str, ...] = ("raw", "reduced", "tsne")


@dataclass
class EvaluationConfig:
    """Settings of an evaluation, fixed before looking at any score.

    Attributes:
        reducer: reducer spec for the ``reduced`` space (e.g. ``"pca:n_components=100"``).
            Sparse features are reduced with a truncated SVD whatever the reducer (a PCA
            would densify them; standard-scaling them destroys the clustering).
        cluster_on: spaces in which the clusterers run: raw features, reduced, t-SNE 2-D.
        clusterers: clusterer specs (``"kmeans"``, ``"hdbscan:min_cluster_size=10"``); each
            is run on every feature combination in every space. Clusterers that cannot take a
            sparse matrix get the raw space of TF-IDF / bag of words densified (n x vocabulary
            floats: fine at Flipkart size, large for a big catalogue).
        n_clusters: number of clusters of the clusterers that take one (default: number of
            categories); a clusterer spec's own ``n_clusters`` wins.
        seeds: clusterer and t-SNE seeds; scores are mean +- sd over them.
        text_field: which text the text extractors read: name, description or both.
        scale: row scaling of dense features before reduction: l2, standard or none.
            With l2, reduced rows are L2-normalised again (cosine geometry, as in LSA).
        text_weight: share of the text block in a text x image fusion (0..1).
        perplexity: t-SNE perplexity (fixed beforehand, never tuned on the labels).
        tsne_input: what t-SNE embeds: ``features`` (the scaled, fused features themselves),
            ``reduced`` (the reducer's output, as in the t-SNE paper's PCA-50 recipe) or
            ``auto``: features when every block is dense (pretrained embeddings, word2vec),
            reduced when one is sparse (TF-IDF, bag of words: a 10,000-wide sparse matrix is
            slow to embed, and its SVD is the LSA space that clusters better).
        n_jobs: (run, seed) clustering jobs run at once, one per process; ``None``: as many
            as the CPUs this process may use. Results do not depend on it.
        approximate_above: products past which the evaluator approximates (mini-batch
            k-means, sampled silhouette, t-SNE fitted on a sample, plots from the sample; see
            :mod:`placedemarche.evaluate.scale`); ``None``: ``scale.APPROXIMATE_ABOVE`` (20,000).
        sample_size: products in that stratified sample; ``None``: ``scale.SAMPLE_SIZE`` (10,000).
    """

    reducer: str = "pca:n_components=100"
    cluster_on: tuple[str, ...] = ("raw", "reduced", "tsne")
    clusterers: tuple[str, ...] = ("kmeans",)
    n_clusters: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    text_field: TextField = "both"
    scale: str = "l2"
    text_weight: float = 0.5
    perplexity: float = 30.0
    tsne_input: str = "auto"
    n_jobs: int | None = None
    approximate_above: int | None = None
    sample_size: int | None = None

    def check(self) -> None:
        bad = [s for s in self.cluster_on if s not in SPACES]
        if bad or not self.cluster_on:
            raise PlaceDeMarcheError(f"unknown clustering space {bad}: use {', '.join(SPACES)}")
        if self.scale not in SCALINGS:
            raise PlaceDeMarcheError(f"unknown scaling '{self.scale}': use {', '.join(SCALINGS)}")
        if self.tsne_input not in TSNE_INPUTS:
            raise PlaceDeMarcheError(f"unknown t-SNE input '{self.tsne_input}': use {', '.join(TSNE_INPUTS)}")
        if not 0.0 <= self.text_weight <= 1.0:
            raise PlaceDeMarcheError(f"text weight must be between 0 and 1, got {self.text_weight}")
        if not self.seeds:
            raise PlaceDeMarcheError("at least one seed is needed")
        if not self.clusterers:
            raise PlaceDeMarcheError("at least one clusterer is needed (e.g. kmeans)")
        if self.n_clusters is not None and self.n_clusters < 2:
            raise PlaceDeMarcheError(f"need at least 2 clusters, got {self.n_clusters}")
        if self.n_jobs is not None and self.n_jobs < 1:
            raise PlaceDeMarcheError(f"n_jobs must be at least 1, got {self.n_jobs}")
        if self.approximate_above is not None and self.approximate_above < 1:
            raise PlaceDeMarcheError(f"approximate_above must be at least 1, got {self.approximate_above}")
        if self.sample_size is not None and self.sample_size < 10:
            raise PlaceDeMarcheError(f"the sample needs at least 10 products, got {self.sample_size}")


@dataclass
class SpaceResult:
    """Scores of one feature combination clustered in one space, over all seeds."""

    space: str
    dims: int
    per_seed: list[dict[str, float]]
    confusion: list[list[int]]  # first seed, true category x matched cluster
    seeds: list[int] = field(default_factory=list)
    noise: list[int] | None = None  # first seed, noise products per category (None: no noise)

    def mean(self, metric: str) -> float:
        values = self._values(metric)
        return float(np.mean(values)) if values else float("nan")

    def sd(self, metric: str) -> float:
        values = self._values(metric)
        return float(np.std(values)) if values else float("nan")

    def _values(self, metric: str) -> list[float]:
        # scores made before "noise" was reported lack it: nan, never a crash
        return [v for v in (s.get(metric, math.nan) for s in self.per_seed) if not math.isnan(v)]


@dataclass
class RunResult:
    """One feature combination (text only, image only, or text x image) and one clusterer."""

    name: str
    text: str | None
    image: str | None
    spaces: dict[str, SpaceResult]
    seconds: float
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    map_xy: np.ndarray | None = None  # first seed's t-SNE map, for plots
    map_clusters: np.ndarray | None = None  # first seed's clusters in the main space
    tsne_input: str = "reduced"  # what t-SNE embedded: "features" or "reduced"
    plots: dict[str, str] = field(default_factory=dict)
    #: space -> seed -> cluster of each product; seed -> its t-SNE map
    assignments: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)
    map_seed: int = 0
    tsne_cached: int = 0  # seeds whose t-SNE map came from the cache
    clusterer: str = "kmeans"  # the clusterer spec

    def seed_score(self, metric: str, seed: int, space: str | None = None) -> float:
        """One seed's score (the map shows one seed's clusters: its own ARI, not the mean)."""
        res = self.spaces[space or self.main_space]
        return res.per_seed[res.seeds.index(seed)].get(metric, math.nan)

    @property
    def main_space(self) -> str:
        return "tsne" if "tsne" in self.spaces else next(iter(self.spaces))

    def mean(self, metric: str, space: str | None = None) -> float:
        return self.spaces[space or self.main_space].mean(metric)

    def sd(self, metric: str, space: str | None = None) -> float:
        return self.spaces[space or self.main_space].sd(metric)


@dataclass
class EvaluationReport:
    runs: list[RunResult]
    config: EvaluationConfig
    categories: list[str]
    catalog: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    #: what was approximated and how, one line each (empty: everything exact)
    approximations: dict[str, str] = field(default_factory=dict)
    scale: dict[str, Any] = field(default_factory=dict)  # products, threshold, sample size
    #: products drawn in plots and report.html (sorted indices); None: all of them
    plot_sample: np.ndarray | None = None
    #: the products evaluated (the catalogue after validation), for the report writers
    evaluated: Catalog | None = field(default=None, repr=False, compare=False)

    def plotted(self) -> np.ndarray | slice:
        """Index of the products plots and report.html show: the sample, or all of them."""
        return slice(None) if self.plot_sample is None else self.plot_sample

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": {**asdict(self.config), "cluster_on": list(self.config.cluster_on),
                       "clusterers": list(self.config.clusterers), "seeds": list(self.config.seeds)},
            "catalog": self.catalog,
            "categories": self.categories,
            "scale": self.scale,
            "approximations": self.approximations,
            "runs": [
                {
                    "name": run.name,
                    "text": run.text,
                    "image": run.image,
                    "clusterer": run.clusterer,
                    "seconds": round(run.seconds, 3),
                    "tsne_input": run.tsne_input,
                    "map_seed": run.map_seed,
                    "tsne_maps_from_cache": run.tsne_cached,
                    "features": run.features,
                    "plots": run.plots,
                    "spaces": {
                        space: {
                            "dims": res.dims,
                            **{f"{m}_mean": _round(res.mean(m)) for m in METRICS},
                            **{f"{m}_sd": _round(res.sd(m)) for m in METRICS},
                            "noise_mean": _round(res.mean("noise")),
                            "noise_sd": _round(res.sd("noise")),
                            # scores against the levels above the one evaluated (evaluate/levels.py)
                            **{f"{k}_mean": _round(v) for k, v in _level_means(res.per_seed).items()},
                            "per_seed": [{"seed": seed, **{k: _round(v) for k, v in s.items()}}
                                         for seed, s in zip(self.config.seeds, res.per_seed)],
                            "confusion_matrix": res.confusion,
                            # noise products per category (first seed), beside the matrix's clusters
                            **({"confusion_noise": res.noise} if res.noise is not None else {}),
                        }
                        for space, res in run.spaces.items()
                    },
                }
                for run in self.runs
            ],
        }


def _level_means(per_seed: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for scores in per_seed for k in scores if "_level" in k})
    return {k: float(np.mean([s[k] for s in per_seed if k in s])) for k in keys}


def _round(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)
