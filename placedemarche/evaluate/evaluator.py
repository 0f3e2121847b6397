"""The generic evaluator: do products of one category cluster together on these features?

For every text extractor, every image extractor and every text x image pair asked for, it
builds the feature space, reduces it, clusters it with each clusterer plugin asked for
(``kmeans`` by default, k = number of categories) in each requested space (``raw``,
``reduced``, ``tsne``), and scores the clusters against the true categories over several
seeds (mean and standard deviation). Every feature combination x clusterer is a run; the
t-SNE map of a combination and seed is computed once and shared by all its clusterers.
Past a size threshold (20,000 products) nothing quadratic in the number of products is
computed: k-means restarts on a sample of the rows, and silhouette, t-SNE fit and plots on a stratified sample; each
approximation is listed in ``report.approximations`` (see :mod:`placedemarche.evaluate.scale`).

Usage::

    from placedemarche.data.catalog import load_catalog
    from placedemarche.evaluate.evaluator import EvaluationConfig, evaluate_combinations

    catalog = load_catalog("shared/data/flipkart").validated(image=False)
    report = evaluate_combinations(catalog, text=["tfidf"], config=EvaluationConfig(seeds=(0, 1)))
    print(report.runs[0].name, report.runs[0].mean("ari"))
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from placedemarche.features.store import FeatureStore
from placedemarche.data.catalog import Catalog
from placedemarche.evaluate.clusterer_plans import clusterer_notes, clusterer_plans, dense_for
from placedemarche.core.errors import PlaceDeMarcheError
from placedemarche.evaluate.results import EvaluationConfig, EvaluationReport, RunResult, SpaceResult
from placedemarche.features.extraction import Features, extract_features, extractor_inputs
from placedemarche.evaluate.levels import add_level_scores
from placedemarche.evaluate.fusion import fuse_blocks, reduce_features, scale_rows, tsne_input_for
from placedemarche.evaluate.metrics import matched_confusion, n_clusters_of, noise_counts, score_clustering
from placedemarche.core.plugins import create_plugin
from placedemarche.core.progress import Reporter, reporting, task
from placedemarche.evaluate.scale import PLACE_NEIGHBOURS, ScalePlan, approximations, embed_on_sample, plan_for


def _tsne(X, seed: int, perplexity: float) -> np.ndarray:
    reducer = create_plugin("reducer", "tsne", perplexity=perplexity, random_state=seed)
    return np.asarray(reducer.fit_transform(X), dtype=np.float32)


def _map(X, seed: int, perplexity: float, sample: np.ndarray | None) -> np.ndarray:
    """The 2-D t-SNE map of every row: exact, or fitted on the ``sample`` rows with the others
    placed by their nearest sampled neighbours (see :mod:`placedemarche.evaluate.scale`)."""
    if sample is None:
        return _tsne(X, seed, perplexity)
    return embed_on_sample(X, sample, lambda rows: _tsne(rows, seed, perplexity))


def _cluster(plan: tuple[type, dict[str, Any]], X, seed: int) -> np.ndarray:
    cls, params = plan
    if "random_state" in cls._get_param_names():
        params = {**params, "random_state": seed}
    return np.asarray(cls.create(**params).fit_predict(X), dtype=np.int64)


# -- the evaluator ----------------------------------------------------------------------
def _runtime_params(extractor) -> dict:
    """``{"runtime": {...}}`` for an extractor whose parameters leave a choice to the environment
    (``backend="auto"`` resolves to onnx or torch), so results.json says what ran; else ``{}``."""
    runtime = getattr(extractor, "runtime_params", None)
    if not callable(runtime):
        return {}
    try:
        return {"runtime": {k: repr(v) for k, v in runtime().items()}}
    except PlaceDeMarcheError:  # cannot happen after extraction resolved it; params still say what was asked
        return {}


def evaluate_combinations(
    catalog: Catalog,
    text: Sequence[str] = (),
    image: Sequence[str] = (),
    *,
    config: EvaluationConfig | None = None,
    cache: FeatureStore | None = None,
    fuse: bool = True,
    progress: Reporter | None = None,
) -> EvaluationReport:
    """Cluster and score every text, image and (if ``fuse``) text x image combination.

    ``text`` and ``image`` are plugin specs (``"tfidf"``, ``"mobilenet:alpha=0.75"``). The
    catalogue must be labelled; rows unusable for the modalities asked are dropped first
    (:meth:`Catalog.validated`), so a missing image is a listed row, not an error half-way.
    With a ``cache``, features and t-SNE maps are reused across runs. The report files
    (results.json, results.csv, assignments.csv, PNG plots, report.html) are the report
    stage's: :func:`placedemarche.report.evaluation.write_evaluation_report`.
    ``progress`` receives the progress of each step (see :mod:`placedemarche.core.progress`;
    the CLI passes rich progress bars); without it the call is silent.
    """
    if progress is not None:
        with reporting(progress):
            return evaluate_combinations(catalog, text, image, config=config, cache=cache,
                                         fuse=fuse)
    config = config or EvaluationConfig()
    config.check()
    if not text and not image:
        raise PlaceDeMarcheError("nothing to evaluate: give at least one text or image extractor")
    if catalog.labels is None:
        raise PlaceDeMarcheError(f"{catalog.source or 'catalogue'} has no category column: "
                                 "the evaluation needs the true categories")
    catalog = catalog.validated(text=config.text_field if text else None, image=bool(image),
                                labels=True)
    categories = catalog.categories
    if len(categories) < 2:
        raise PlaceDeMarcheError(f"the catalogue has {len(categories)} category; need at least 2")
    index = {c: i for i, c in enumerate(categories)}
    y = np.array([index[label] for label in catalog.labels])
    k = config.n_clusters or len(categories)
    if k >= len(catalog):
        raise PlaceDeMarcheError(f"{k} clusters for {len(catalog)} products: need more products")
    plan = plan_for(y, config.approximate_above, config.sample_size)
    # unknown clusterers fail before any extraction
    plans = clusterer_plans(config.clusterers, k, plan.threshold)

    features: dict[tuple[str, str], Features] = {}
    for kind, specs in (("text", text), ("image", image)):
        for spec in specs:
            extractor = create_plugin(kind, spec)
            items = extractor_inputs(extractor, catalog, config.text_field)
            features[(kind, spec)] = extract_features(extractor, items, cache=cache)

    combos: list[tuple[str | None, str | None]] = [(t, None) for t in text] + [(None, i) for i in image]
    if fuse:
        combos += [(t, i) for t in text for i in image]

    prepared = [_prepare_run(t, i, features, config) for t, i in combos]
    runs = _cluster_runs(prepared, features, y, plans, config, cache, plan)
    add_level_scores(runs, categories, y, catalog.category_info.get("level", 1))
    runs.sort(key=lambda r: (-_nan_low(r.mean("ari")), r.name))

    report = EvaluationReport(
        runs=runs, config=config, categories=categories,
        catalog={"source": catalog.source, "products": len(catalog),
                 "text_field": config.text_field if text else None,
                 "text_columns": catalog.text_columns(config.text_field) if text else [],
                 "image_column": catalog.columns.get("image") if image else None,
                 "dropped": len(catalog.dropped), "category": catalog.category_info,
                 "dropped_rows": [{"id": p.row_id, "line": p.line, "problem": p.problem}
                                  for p in catalog.dropped]},
        scale=plan.describe(), plot_sample=plan.sample,
        approximations=approximations(plan, any(r.map_xy is not None for r in runs),
                                      clusterer_notes(config.clusterers, plans, len(y))),
        evaluated=catalog,
    )
    return report


def _nan_low(value: float) -> float:
    return -1.0 if math.isnan(value) else value


@dataclass
class _PreparedRun:
    """One feature combination's clustering spaces, built once and shared by its seeds."""

    name: str
    text: str | None
    image: str | None
    used: list[tuple[str, str]]
    spaces_X: dict[str, Any]  # raw / reduced matrices
    tsne_X: Any
    tsne_input: str
    seconds: float


def _prepare_run(text_spec, image_spec, features, config: EvaluationConfig) -> _PreparedRun:
    started = time.perf_counter()
    parts = [("text", text_spec), ("image", image_spec)]
    used = [(kind, spec) for kind, spec in parts if spec is not None]
    weights = {"text": config.text_weight, "image": 1.0 - config.text_weight} if len(used) > 1 \
        else {used[0][0]: 1.0}

    raw_blocks, reduced_blocks = [], []
    for kind, spec in used:
        scaled = scale_rows(features[(kind, spec)].matrix, config.scale)
        raw_blocks.append(scaled)
        reduced = reduce_features(scaled, config.reducer)  # also feeds the 2-D map
        if config.scale == "l2":
            from sklearn.preprocessing import normalize

            reduced = normalize(reduced)
        reduced_blocks.append(reduced)
    w = [weights[kind] for kind, _ in used]
    spaces_X: dict[str, Any] = {}
    tsne_input = tsne_input_for(config.tsne_input, raw_blocks)
    raw = None  # the fused scaled features, only built when something uses them
    if "raw" in config.cluster_on or tsne_input == "features":
        raw = raw_blocks[0] if len(used) == 1 else fuse_blocks(raw_blocks, w)
    if "raw" in config.cluster_on:
        spaces_X["raw"] = raw
    reduced = reduced_blocks[0] if len(used) == 1 else fuse_blocks(reduced_blocks, w)
    if "reduced" in config.cluster_on:
        spaces_X["reduced"] = reduced
    return _PreparedRun(
        name=" + ".join(spec for _, spec in used), text=text_spec, image=image_spec, used=used,
        spaces_X=spaces_X, tsne_X=raw if tsne_input == "features" else reduced,
        tsne_input=tsne_input, seconds=time.perf_counter() - started,
    )


def embedding_key(run: _PreparedRun, features, config: EvaluationConfig, seed: int,
                  plan: ScalePlan | None = None) -> str | None:
    """Cache key of one run's t-SNE map: the features (their own cache keys), everything that
    turns them into the t-SNE input, t-SNE's settings, and the sample it was fitted on when
    the ``plan`` approximates. None when a feature has no key."""
    keys = [features[used].key for used in run.used]
    if any(key is None for key in keys):
        return None
    tsne = create_plugin("reducer", "tsne", perplexity=config.perplexity, random_state=seed)
    payload = {
        "what": "tsne-embedding",
        "features": keys,
        "scale": config.scale,
        "tsne_input": run.tsne_input,
        "reducer": config.reducer if run.tsne_input == "reduced" else None,
        "text_weight": config.text_weight if len(run.used) > 1 else None,
        "tsne": {"class": f"{type(tsne).__module__}.{type(tsne).__qualname__}",
                 "version": getattr(tsne, "cache_version", "1"),
                 "params": {k: repr(v) for k, v in sorted(tsne.get_params().items())}},
    }
    if plan is not None and plan.active:  # exact maps keep their earlier keys
        payload["sampled"] = {"size": len(plan.sample), "seed": 0, "neighbours": PLACE_NEIGHBOURS}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def labels_key(run: _PreparedRun, features, config: EvaluationConfig, space: str, plan, seed: int,
               scale: ScalePlan | None = None) -> str | None:
    """Cache key of one clusterer's labels in one space and seed: what the space is made of
    (for t-SNE, its map's key), the clusterer's class, version and parameters. An identical
    re-run then clusters nothing again; another clusterer or k is another key."""
    if space == "tsne":
        source = embedding_key(run, features, config, seed, scale)
    else:
        keys = [features[used].key for used in run.used]
        source = None if any(key is None for key in keys) else {
            "features": keys, "scale": config.scale,
            "reducer": config.reducer if space == "reduced" else None,
            "text_weight": config.text_weight if len(run.used) > 1 else None}
    if source is None:
        return None
    cls, params = plan
    payload = {"what": "cluster-labels", "space": space, "source": source, "seed": seed,
               "clusterer": {"class": f"{cls.__module__}.{cls.__qualname__}",
                             "version": getattr(cls, "cache_version", "1"),
                             "params": {k: repr(v) for k, v in sorted(params.items())}}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _cluster_one_seed(spaces_X: dict[str, Any], tsne_X, xy, seed: int, plans, y: np.ndarray,
                      cluster_on: Sequence[str], perplexity: float, known: dict | None = None,
                      sample: np.ndarray | None = None):
    """One (feature combination, seed) job: the t-SNE map unless given, then every clusterer
    in every space (unless its labels are ``known``, from the cache), and their scores. One map
    serves all the clusterers. With a ``sample`` (large catalogues), the map is fitted on it and
    the silhouette computed on it. A top-level function of plain arguments, so worker processes
    can run it."""
    known = known or {}
    computed = None
    if "tsne" in cluster_on and xy is None:
        computed = xy = _map(tsne_X, seed, perplexity, sample)
    labels, scores = {}, {}
    for space in cluster_on:
        X = xy if space == "tsne" else spaces_X[space]
        dense = None  # densified once per space, only if a clusterer needs it
        for c, plan in enumerate(plans):
            if (c, space) in known:
                labels[(c, space)] = known[(c, space)]
            else:
                given = X
                if not plan[0].accepts_sparse:
                    dense = dense_for(X, plan[0].name) if dense is None else dense
                    given = dense
                labels[(c, space)] = _cluster(plan, given, seed)
            scores[(c, space)] = score_clustering(y, labels[(c, space)], X, sample=sample)
    return computed, labels, scores


def default_jobs() -> int:
    """The CPUs this process may use (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cluster_runs(prepared: list[_PreparedRun], features, y: np.ndarray, plans, config: EvaluationConfig,
                  cache: FeatureStore | None, scale: ScalePlan) -> list[RunResult]:
    """Run every (feature combination, seed) job, several at once, reusing cached t-SNE maps;
    each job runs every clusterer. One RunResult per combination x clusterer."""
    seeds = list(config.seeds)
    sample = scale.sample
    jobs = [(r, seed) for r in range(len(prepared)) for seed in seeds]
    cached_xy: dict[tuple[int, int], np.ndarray] = {}
    keys: dict[tuple[int, int], str] = {}
    if cache is not None and "tsne" in config.cluster_on:
        for r, seed in jobs:
            key = embedding_key(prepared[r], features, config, seed, scale)
            if key is None:
                continue
            keys[(r, seed)] = key
            xy = cache.arrays.load(key)
            if xy is not None and getattr(xy, "shape", None) == (len(y), 2):
                cached_xy[(r, seed)] = np.asarray(xy, dtype=np.float32)
    known: dict[tuple[int, int], dict] = {job: {} for job in jobs}
    label_keys: dict[tuple[int, int, int, str], str] = {}
    if cache is not None:
        for r, seed in jobs:
            for c, plan in enumerate(plans):
                for space in config.cluster_on:
                    key = labels_key(prepared[r], features, config, space, plan, seed, scale)
                    if key is None:
                        continue
                    label_keys[(r, seed, c, space)] = key
                    labels = cache.arrays.load(key)
                    if labels is not None and getattr(labels, "shape", None) == (len(y),):
                        known[(r, seed)][(c, space)] = np.asarray(labels)
    n_jobs = min(config.n_jobs or default_jobs(), len(jobs))
    # With every map and every clustering cached only the scores are left: worker start-up
    # would cost more than it saves.
    everything_cached = (len(cached_xy) == len(jobs) or "tsne" not in config.cluster_on) and \
        sum(len(k) for k in known.values()) == len(jobs) * len(plans) * len(config.cluster_on)
    if everything_cached and config.n_jobs is None:
        n_jobs = 1

    def call(r, seed):
        run = prepared[r]
        return (r, seed, *_cluster_one_seed(run.spaces_X, run.tsne_X, cached_xy.get((r, seed)), seed, plans,
                                            y, config.cluster_on, config.perplexity, known[(r, seed)], sample))

    results: dict[tuple[int, int], tuple] = {}
    started = time.perf_counter()
    with task(_job_label(prepared, jobs, 0, n_jobs), total=len(jobs)) as progress:
        if n_jobs == 1:
            outcomes = (call(r, seed) for r, seed in jobs)
        else:
            from joblib import Parallel, delayed

            parallel = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
            outcomes = ((*jobs[index], *result) for index, result in parallel(
                delayed(_indexed_job)(index, prepared[r].spaces_X, prepared[r].tsne_X,
                                      cached_xy.get((r, seed)), seed, plans, y, config.cluster_on,
                                      config.perplexity, known[(r, seed)], sample)
                for index, (r, seed) in enumerate(jobs)))
        for r, seed, computed, labels, scores in outcomes:
            results[(r, seed)] = (computed, labels, scores)
            if computed is not None and (r, seed) in keys:
                cache.arrays.save(keys[(r, seed)], computed, meta={
                    "what": "tsne-embedding", "run": prepared[r].name, "seed": seed, "perplexity": config.perplexity})
            for (c, space), found in labels.items():
                key = label_keys.get((r, seed, c, space))
                if key is not None and (c, space) not in known[(r, seed)]:
                    cache.arrays.save(key, found, meta={"what": "cluster-labels", "run": prepared[r].name,
                                                        "clusterer": config.clusterers[c], "space": space,
                                                        "seed": seed})
            progress.advance(1)
            progress.describe(_job_label(prepared, jobs, len(results), n_jobs))
    clustering_seconds = time.perf_counter() - started

    runs = []
    n_cat = int(y.max()) + 1
    main = "tsne" if "tsne" in config.cluster_on else config.cluster_on[0]
    # Default output keeps its names: the clusterer is named once there is a choice to tell apart.
    named = len(config.clusterers) > 1 or tuple(config.clusterers) != ("kmeans",)
    share = clustering_seconds / max(1, len(prepared) * len(plans))
    first = seeds[0]
    for r, run in enumerate(prepared):
        embeddings = {seed: cached_xy.get((r, seed), results[(r, seed)][0]) for seed in seeds} \
            if "tsne" in config.cluster_on else {}
        map_xy = embeddings.get(first)
        if map_xy is None:  # no t-SNE space asked: a map of the first seed all the same, once
            map_xy = _map(run.tsne_X, first, config.perplexity, sample)
        used_features = {spec: {"dims": int(features[(kind, spec)].matrix.shape[1]),
                                "cached": features[(kind, spec)].from_cache,
                                "seconds": round(features[(kind, spec)].seconds, 3),
                                "params": {k2: repr(v) for k2, v in
                                           features[(kind, spec)].extractor.get_params().items()},
                                **_runtime_params(features[(kind, spec)].extractor)}
                         for kind, spec in run.used}
        for c, (spec, (_, params)) in enumerate(zip(config.clusterers, plans)):
            assignments = {space: {seed: results[(r, seed)][1][(c, space)] for seed in seeds}
                           for space in config.cluster_on}
            spaces = {}
            for space in config.cluster_on:
                labels = assignments[space][first]
                asked = params.get("n_clusters")
                n_pred = max(n_clusters_of(labels), asked if isinstance(asked, int) else 0)
                noise = noise_counts(y, labels, n_cat)
                spaces[space] = SpaceResult(
                    space, 2 if space == "tsne" else int(run.spaces_X[space].shape[1]),
                    [results[(r, seed)][2][(c, space)] for seed in seeds],
                    matched_confusion(y, labels, n_cat, n_pred).tolist(), seeds=list(seeds),
                    noise=noise.tolist() if noise.any() else None)
            runs.append(RunResult(
                name=f"{run.name} / {spec}" if named else run.name, text=run.text, image=run.image,
                spaces=spaces, seconds=run.seconds + share, features=used_features,
                map_xy=map_xy, map_clusters=assignments[main][first], tsne_input=run.tsne_input,
                assignments=assignments, embeddings=embeddings, map_seed=first,
                tsne_cached=sum(1 for seed in seeds if (r, seed) in cached_xy), clusterer=spec,
            ))
    return runs


def _indexed_job(index: int, *args):
    """A job that returns its index with its result (unordered results say whose they are)."""
    return index, _cluster_one_seed(*args)


def _job_label(prepared: list[_PreparedRun], jobs, done: int, n_jobs: int) -> str:
    """Which feature combination(s) and seed(s) are being clustered: the next jobs not finished yet."""
    pending = jobs[done:done + n_jobs]
    if not pending:
        return "clustering: done"
    return "clustering " + "; ".join(f"{prepared[r].name} (seed {seed})" for r, seed in pending)
