"""Report files of an evaluation: results.json, results.csv, and PNG plots people look at.

Plots draw the report's ``plot_sample`` (a stratified sample past the evaluator's size
threshold, see :mod:`placedemarche.evaluate.scale`), results and assignments.csv every product."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from placedemarche.core.files import atomic_write_text, atomic_writer
from placedemarche.evaluate.metrics import METRICS, n_clusters_of
from placedemarche.report.html_evaluation import write_evaluation_html
from placedemarche.report.plots import plot_cluster_examples, plot_confusion, plot_map, plot_summary, slug

if TYPE_CHECKING:
    from placedemarche.data.catalog import Catalog
    from placedemarche.evaluate.results import EvaluationReport



def write_evaluation_report(report: "EvaluationReport", out: str | Path, catalog: "Catalog | None" = None) -> None:
    """Write results.json, results.csv, assignments.csv, the PNG plots and report.html of
    ``report`` into ``out``; ``catalog`` defaults to the products the evaluation kept."""
    out = Path(out)
    catalog = catalog if catalog is not None else report.evaluated
    if catalog is None:
        raise ValueError("write_evaluation_report needs the evaluated catalogue")
    out.mkdir(parents=True, exist_ok=True)
    for run in report.runs:
        base = slug(run.name)
        if run.map_xy is not None:
            run.plots["map"] = f"{base}_map.png"
            plot_map(run, report.categories, catalog, out / run.plots["map"], rows=report.plotted())
        if run.image is not None and run.map_clusters is not None and n_clusters_of(run.map_clusters):
            run.plots["cluster_examples"] = f"{base}_cluster_examples.png"
            plot_cluster_examples(run, report.categories, catalog, out / run.plots["cluster_examples"],
                                  rows=report.plotted())
        space = run.main_space
        run.plots["confusion"] = f"{base}_confusion_{space}.png"
        plot_confusion(np.array(run.spaces[space].confusion), report.categories,
                       f"{run.name} - {run.clusterer} on {space}, seed {report.config.seeds[0]}",
                       out / run.plots["confusion"], noise=run.spaces[space].noise)
    report.files["summary_plot"] = "ari_by_run.png"
    plot_summary(report, out / "ari_by_run.png")
    report.files["json"] = "results.json"
    report.files["csv"] = "results.csv"
    report.files["assignments"] = "assignments.csv"
    with atomic_writer(out / "assignments.csv", "w", encoding="utf-8", newline="") as handle:
        write_assignments(report, catalog, handle)
    atomic_write_text(out / "results.json", json.dumps(report.to_dict(), indent=2) + "\n")
    atomic_write_text(out / "results.csv", results_csv(report))
    report.files["html"] = write_evaluation_html(report, out, catalog).name


def write_assignments(report: "EvaluationReport", catalog: "Catalog", handle) -> None:
    """Every product's cluster per run, space and seed, with that seed's t-SNE coordinates:
    one row each, so users can act on the clusters and anyone can recompute the scores."""
    writer = csv.writer(handle)
    writer.writerow(["id", "category", "run", "space", "seed", "cluster", "tsne_x", "tsne_y"])
    for run in report.runs:
        for space, per_seed in run.assignments.items():
            for seed, labels in per_seed.items():
                xy = run.embeddings.get(seed)
                for i, (pid, category) in enumerate(zip(catalog.ids, catalog.labels)):
                    coords = ("", "") if xy is None else (f"{xy[i, 0]:.4f}", f"{xy[i, 1]:.4f}")
                    writer.writerow([pid, category, run.name, space, seed, int(labels[i]), *coords])


def results_csv(report: "EvaluationReport") -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "text", "image", "clusterer", "space", "dims", "seeds", "text_field",
                     *[f"{m}_{stat}" for m in (*METRICS, "noise") for stat in ("mean", "sd")]])
    for run in report.runs:
        for space, res in run.spaces.items():
            writer.writerow([
                run.name, run.text or "", run.image or "", run.clusterer, space, res.dims, len(res.per_seed),
                report.config.text_field if run.text else "",
                *[_fmt(v) for m in (*METRICS, "noise") for v in (res.mean(m), res.sd(m))],
            ])
    return buffer.getvalue()


def _fmt(value: float) -> str:
    return "" if value != value else f"{value:.4f}"


#: 20 colours, every pair at least 0.26 apart in RGB: matplotlib's tab10, then ten picked
#: greedily from Trubetskoy's distinct colours. tab20 (used past ten colours before) pairs a
#: dark and a light shade of each hue, so two categories looked alike.
