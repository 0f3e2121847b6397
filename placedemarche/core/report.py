"""Report files of an evaluation: results.json, results.csv, and PNG plots people look at."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .files import atomic_write_text
from .metrics import METRICS, match_clusters

if TYPE_CHECKING:
    from .catalog import Catalog
    from .evaluate import EvaluationReport, RunResult


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "run"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_evaluation_report(report: "EvaluationReport", out: Path, catalog: "Catalog") -> None:
    out.mkdir(parents=True, exist_ok=True)
    for run in report.runs:
        base = slug(run.name)
        if run.map_xy is not None:
            run.plots["map"] = f"{base}_map.png"
            plot_map(run, report.categories, catalog, out / run.plots["map"])
        if run.image is not None and run.map_clusters is not None:
            run.plots["cluster_examples"] = f"{base}_cluster_examples.png"
            plot_cluster_examples(run, report.categories, catalog, out / run.plots["cluster_examples"])
        space = run.main_space
        run.plots["confusion"] = f"{base}_confusion_{space}.png"
        plot_confusion(np.array(run.spaces[space].confusion), report.categories,
                       f"{run.name} - KMeans on {space}, seed {report.config.seeds[0]}",
                       out / run.plots["confusion"])
    report.files["summary_plot"] = "ari_by_run.png"
    plot_summary(report, out / "ari_by_run.png")
    report.files["json"] = "results.json"
    report.files["csv"] = "results.csv"
    atomic_write_text(out / "results.json", json.dumps(report.to_dict(), indent=2) + "\n")
    atomic_write_text(out / "results.csv", results_csv(report))


def results_csv(report: "EvaluationReport") -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "text", "image", "space", "dims", "seeds", "text_field",
                     *[f"{m}_{stat}" for m in METRICS for stat in ("mean", "sd")]])
    for run in report.runs:
        for space, res in run.spaces.items():
            writer.writerow([
                run.name, run.text or "", run.image or "", space, res.dims, len(res.per_seed),
                report.config.text_field,
                *[_fmt(v) for m in METRICS for v in (res.mean(m), res.sd(m))],
            ])
    return buffer.getvalue()


def _fmt(value: float) -> str:
    return "" if value != value else f"{value:.4f}"


def _category_colours(n: int):
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def plot_map(run: "RunResult", categories: list[str], catalog: "Catalog", path: Path) -> None:
    """Side-by-side 2-D t-SNE maps coloured by true category and by KMeans cluster."""
    plt = _pyplot()
    xy = run.map_xy
    index = {c: i for i, c in enumerate(categories)}
    true = np.array([index[c] for c in catalog.labels])
    n_clusters = int(run.map_clusters.max()) + 1
    colours = _category_colours(max(len(categories), n_clusters) + n_clusters)
    # A cluster takes the colour of the category it is matched to, so both panels compare at a glance.
    mapping = match_clusters(true, run.map_clusters, len(categories), n_clusters)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5))
    for i, category in enumerate(categories):
        mask = true == i
        axes[0].scatter(xy[mask, 0], xy[mask, 1], s=9, color=colours[i], label=category, alpha=0.8)
    axes[0].set_title("True categories")
    axes[0].legend(fontsize=8, markerscale=2, loc="best")
    for c in sorted(set(run.map_clusters.tolist()), key=lambda c: mapping.get(c, len(categories) + c)):
        mask = run.map_clusters == c
        matched = mapping.get(c)
        label = f"cluster {c} -> {categories[matched]}" if matched is not None else f"cluster {c} (unmatched)"
        colour = colours[matched if matched is not None else len(categories) + c]
        axes[1].scatter(xy[mask, 0], xy[mask, 1], s=9, color=colour, label=label, alpha=0.8)
    space = run.main_space
    axes[1].set_title(f"KMeans clusters ({space}) - ARI {run.mean('ari', space):.3f}")
    axes[1].legend(fontsize=8, markerscale=2, loc="best")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{run.name}: t-SNE map of {len(true)} products")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, categories: list[str], title: str, path: Path) -> None:
    """True category x cluster counts, clusters matched to categories (Hungarian)."""
    plt = _pyplot()
    n_true, n_pred = matrix.shape
    fig, ax = plt.subplots(figsize=(1.1 * n_pred + 4, 0.7 * n_true + 2.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_yticks(range(n_true), categories, fontsize=8)
    cluster_names = [categories[i] if i < n_true else f"extra {i - n_true + 1}" for i in range(n_pred)]
    ax.set_xticks(range(n_pred), cluster_names, rotation=40, ha="right", fontsize=8)
    ax.set_xlabel("cluster (named after its matched category)")
    ax.set_ylabel("true category")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                color="white" if value > threshold else "black")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_summary(report: "EvaluationReport", path: Path) -> None:
    """Bar chart of mean ARI (with sd) per run and clustering space."""
    plt = _pyplot()
    spaces = list(report.config.cluster_on)
    names = [r.name for r in report.runs]
    width = 0.8 / len(spaces)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names) + 3), 4.5))
    for j, space in enumerate(spaces):
        means = [r.mean("ari", space) for r in report.runs]
        sds = [r.sd("ari", space) for r in report.runs]
        positions = np.arange(len(names)) + (j - (len(spaces) - 1) / 2) * width
        ax.bar(positions, means, width, yerr=sds, capsize=3, label=space)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("ARI (mean +- sd over seeds)")
    ax.set_ylim(min(0, ax.get_ylim()[0]), 1)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(title="clustered on")
    ax.set_title(f"ARI per run ({len(report.config.seeds)} seeds, text: {report.config.text_field})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cluster_examples(run: "RunResult", categories: list[str], catalog: "Catalog", path: Path,
                          per_cluster: int = 8, seed: int = 0) -> None:
    """A grid of product photos: one row per cluster, with each photo's true category."""
    from PIL import Image

    plt = _pyplot()
    index = {c: i for i, c in enumerate(categories)}
    true = np.array([index[c] for c in catalog.labels])
    clusters = run.map_clusters
    n_clusters = int(clusters.max()) + 1
    mapping = match_clusters(true, clusters, len(categories), n_clusters)
    order = sorted(range(n_clusters), key=lambda c: mapping.get(c, len(categories) + c))
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(n_clusters, per_cluster, figsize=(per_cluster * 1.5, n_clusters * 1.75),
                             squeeze=False)
    for row, c in enumerate(order):
        members = np.flatnonzero(clusters == c)
        picked = rng.choice(members, size=min(per_cluster, len(members)), replace=False)
        for col in range(per_cluster):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col >= len(picked):
                continue
            i = int(picked[col])
            with Image.open(catalog.image_paths[i]) as im:
                im.thumbnail((128, 128))
                ax.imshow(np.asarray(im.convert("RGB")))
            ok = mapping.get(c) == true[i]
            ax.set_title(catalog.labels[i][:18], fontsize=6, color="black" if ok else "red")
        matched = mapping.get(c)
        axes[row, 0].set_ylabel(f"cluster {c}\n({categories[matched][:16] if matched is not None else '-'})",
                                fontsize=7)
    fig.suptitle(f"{run.name}: example products per cluster (red: category differs from the cluster's)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
