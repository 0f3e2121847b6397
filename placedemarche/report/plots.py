"""PNG plots of every report: t-SNE maps, confusion matrices, the summary bar chart and
example photos per cluster; the colours and titles the HTML pages share with them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from placedemarche.data.categories import first_level_groups
from placedemarche.evaluate.metrics import match_clusters, n_clusters_of

if TYPE_CHECKING:
    from placedemarche.data.catalog import Catalog
    from placedemarche.evaluate.results import EvaluationReport, RunResult


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "run"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def text_field_label(report: "EvaluationReport") -> str:
    """The text field, or that no text was used (image-only runs read no text)."""
    field = report.catalog.get("text_field", report.config.text_field)
    return f"text: {field}" if field else "image only"


DISTINCT_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#000000", "#aaffc3", "#000075", "#800000", "#ffd8b1", "#dcbeff",
    "#808000", "#f032e6", "#ffe119", "#911eb4",
)


def _category_colours(n: int) -> list[str]:
    """``n`` colours, all distinct up to twenty."""
    return [DISTINCT_COLOURS[i % len(DISTINCT_COLOURS)] for i in range(n)]


def _legend_outside(ax) -> None:
    """Legend to the right of the axes, where it hides no point."""
    ax.legend(fontsize=8, markerscale=2, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0.0, frameon=False)


def _wrap(text: str, width: int = 16, lines: int = 2) -> str:
    """A category name on up to ``lines`` lines, not cut mid-word at a fixed width."""
    import textwrap

    wrapped = textwrap.wrap(text, width) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: width - 1] + "…"
    return "\n".join(wrapped)


def plot_map(run: "RunResult", categories: list[str], catalog: "Catalog", path: Path,
             rows: np.ndarray | slice = slice(None)) -> None:
    """Side-by-side 2-D t-SNE maps coloured by true category and by the run's clusters, of
    the products ``rows`` (default: all)."""
    plt = _pyplot()
    fig = map_figure(run, categories, catalog, rows)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def map_title(run: "RunResult") -> str:
    """The cluster panel plots one seed's clusters: its title gives that seed's ARI, the mean apart."""
    space = run.main_space
    noise = run.seed_score("noise", run.map_seed, space)
    return (f"{run.clusterer} clusters ({space}), seed {run.map_seed}: ARI "
            f"{run.seed_score('ari', run.map_seed, space):.3f} (mean of "
            f"{len(run.spaces[space].per_seed)} seeds {run.mean('ari', space):.3f})"
            + (f", noise {noise:.0%}" if noise > 0 else ""))


#: Colour of noise points (in no cluster) on the maps.


NOISE_COLOUR = "#c8c8c8"


def map_figure(run: "RunResult", categories: list[str], catalog: "Catalog", rows: np.ndarray | slice = slice(None)):
    plt = _pyplot()
    index = {c: i for i, c in enumerate(categories)}
    every = np.array([index[c] for c in catalog.labels])
    n_clusters = n_clusters_of(run.map_clusters)
    colours = _category_colours(len(categories) + n_clusters)
    # A cluster takes the colour of the category it is matched to, so both panels compare at a
    # glance; matched on every product, as the scores are.
    mapping = match_clusters(every, run.map_clusters, len(categories), n_clusters)
    xy, true, clusters = run.map_xy[rows], every[rows], run.map_clusters[rows]
    fig, axes = plt.subplots(1, 2, figsize=(17, 6.5))
    for i, category in enumerate(categories):
        mask = true == i
        axes[0].scatter(xy[mask, 0], xy[mask, 1], s=9, color=colours[i], label=category, alpha=0.8)
    axes[0].set_title("True categories")
    _legend_outside(axes[0])
    # matched clusters in category order, then unmatched ones, noise (-1) last
    for c in sorted(set(clusters.tolist()),
                    key=lambda c: mapping.get(c, len(categories) + c) if c >= 0 else len(categories) + n_clusters):
        mask = clusters == c
        matched = mapping.get(c)
        label = f"cluster {c} -> {categories[matched]}" if matched is not None else f"cluster {c} (unmatched)"
        colour = colours[matched if matched is not None else len(categories) + c]
        if c < 0:
            label, colour = "noise (in no cluster)", NOISE_COLOUR
        axes[1].scatter(xy[mask, 0], xy[mask, 1], s=9, color=colour, label=label, alpha=0.8)
    axes[1].set_title(map_title(run))
    _legend_outside(axes[1])
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    shown = f"{len(true)} products" if len(true) == len(every) else f"{len(true)} sampled of {len(every)} products"
    fig.suptitle(f"{run.name}: t-SNE map of {shown}")
    fig.tight_layout()
    return fig


def plot_confusion(matrix: np.ndarray, categories: list[str], title: str, path: Path,
                   xlabel: str = "cluster (named after its matched category)", noise=None) -> None:
    """True category (rows) x predicted column counts. The clustering study's columns are
    clusters matched to categories (Hungarian); a classifier passes ``xlabel="predicted category"``.
    ``noise`` (products in no cluster, per category) is drawn as a last column."""
    plt = _pyplot()
    n_true, n_pred = matrix.shape
    if noise is not None:
        matrix = np.column_stack([matrix.reshape(n_true, n_pred), np.asarray(noise)])
    # Square cells of a constant size: a figure sized to the matrix, not padded to a minimum,
    # and a tight bounding box that takes in the tick labels and title wherever they reach.
    cell = 0.5
    fig, ax = plt.subplots(figsize=(cell * matrix.shape[1] + 0.6, cell * n_true + 0.6))
    ax.imshow(matrix, cmap="Blues")
    ax.set_yticks(range(n_true), categories, fontsize=8)
    cluster_names = [categories[i] if i < n_true else f"extra {i - n_true + 1}" for i in range(n_pred)]
    if noise is not None:
        cluster_names.append("noise")
    ax.set_xticks(range(len(cluster_names)), cluster_names, rotation=40, ha="right", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("true category")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        if value or n_true <= 20:  # dozens of categories: zeros left blank
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")
    groups = first_level_groups(categories)  # categories sorted by path come in first-level blocks
    if any(end - start > 1 for _, start, end in groups):
        for _, start, _ in groups[1:]:
            ax.axhline(start - 0.5, color="#555", linewidth=1)
            ax.axvline(start - 0.5, color="#555", linewidth=1)
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
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
    ax.set_title(f"ARI per run ({len(report.config.seeds)} seeds, {text_field_label(report)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cluster_examples(run: "RunResult", categories: list[str], catalog: "Catalog", path: Path,
                          per_cluster: int = 8, seed: int = 0, rows: np.ndarray | slice = slice(None)) -> None:
    """A grid of product photos: one row per cluster, with each photo's true category; the
    photos are picked among the products ``rows`` (default: all)."""
    from PIL import Image

    plt = _pyplot()
    index = {c: i for i, c in enumerate(categories)}
    true = np.array([index[c] for c in catalog.labels])
    clusters = run.map_clusters
    n_clusters = n_clusters_of(clusters)  # noise (-1) gets no row
    mapping = match_clusters(true, clusters, len(categories), n_clusters)
    order = sorted(range(n_clusters), key=lambda c: mapping.get(c, len(categories) + c))
    rng = np.random.default_rng(seed)
    candidates = np.arange(len(clusters))[rows]
    fig, axes = plt.subplots(n_clusters, per_cluster, figsize=(per_cluster * 1.5, n_clusters * 1.95),
                             squeeze=False)
    for row, c in enumerate(order):
        members = candidates[clusters[candidates] == c]
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
            ax.set_title(_wrap(catalog.labels[i]), fontsize=6, color="black" if ok else "red")
        matched = mapping.get(c)
        axes[row, 0].set_ylabel(f"cluster {c}\n{_wrap(categories[matched]) if matched is not None else '-'}",
                                fontsize=7)
    fig.suptitle(f"{run.name}: example products per cluster (red: category differs from the cluster's)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
