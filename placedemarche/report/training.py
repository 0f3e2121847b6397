"""The report files of a training run beside the model: metrics.json, folds.csv,
classification_report.txt, the confusion matrix (PNG + CSV), learning curves and report.html."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from placedemarche.classify.crossval import TrainResult


def write_training_report(result: TrainResult, out: str | Path) -> dict[str, str]:
    """Write the report files of ``result`` into the model directory ``out`` (metrics.json,
    folds.csv, classification_report.txt, confusion matrix PNG + CSV, learning curves for a
    fine-tuned image block, report.html); returns them by kind, also kept in ``result.files``."""
    from sklearn.metrics import classification_report

    from placedemarche.core.files import atomic_write_text
    from placedemarche.report.plots import plot_confusion

    out = Path(out)
    y, oof, histories, final_history = result.y, result.oof, result.histories, result.final_history
    files = {"metrics": "metrics.json"}
    summary = result.summary
    categories = result.model.categories
    if result.folds:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(result.folds[0]))
        writer.writeheader()
        writer.writerows(result.folds)
        atomic_write_text(out / "folds.csv", buffer.getvalue())
        files["folds"] = "folds.csv"
        main = summary["main"]
        text = [f"{name}: {classification_report(y, np.argmax(P, axis=1), labels=range(len(categories)), target_names=categories, digits=3, zero_division=0)}"
                for name, P in oof.items()]
        atomic_write_text(out / "classification_report.txt",
                          f"Out-of-fold predictions, {len(result.folds)} stratified folds\n\n" + "\n".join(text))
        files["classification_report"] = "classification_report.txt"
        matrix = np.array(summary["results"][main]["confusion_matrix"])
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["true \\ predicted", *categories])
        for category, row in zip(categories, matrix):
            writer.writerow([category, *map(int, row)])
        atomic_write_text(out / "confusion_matrix.csv", buffer.getvalue())
        plot_confusion(matrix, categories,
                       f"{main}: out-of-fold predictions, {len(result.folds)} folds "
                       f"(accuracy {summary['mean']['accuracy']:.3f})", out / "confusion_matrix.png",
                       xlabel="predicted category")
        files.update(confusion_csv="confusion_matrix.csv", confusion_png="confusion_matrix.png")
    if histories or final_history:
        plot_learning_curves(histories or [final_history], out / "learning_curves.png")
        atomic_write_text(out / "learning_curves.json",
                          json.dumps({"folds": histories, "final": final_history}, indent=1))
        files.update(learning_curves="learning_curves.png", learning_curves_data="learning_curves.json")
    from placedemarche.report.html_training import write_training_html

    files["html"] = write_training_html(result, out, histories, final_history).name
    summary["files"] = files
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2))
    result.files = files
    return files


def plot_learning_curves(histories: list[list[dict]], path: Path) -> None:
    """Loss and accuracy per epoch (training and validation), one line per fold, with the
    phase change (head -> fine-tuning) marked."""
    from placedemarche.report.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for metric, ax in zip(("loss", "accuracy"), axes):
        for number, history in enumerate(histories, start=1):
            epochs = range(1, len(history) + 1)
            line, = ax.plot(epochs, [h.get(metric, np.nan) for h in history], lw=1,
                            label=f"fold {number} train" if len(histories) > 1 else "train")
            if any(f"val_{metric}" in h for h in history):
                ax.plot(epochs, [h.get(f"val_{metric}", np.nan) for h in history], lw=1, ls="--",
                        color=line.get_color(), label=f"fold {number} validation" if len(histories) > 1 else "validation")
            switch = next((i for i, h in enumerate(history) if h["phase"] == "finetune"), None)
            if switch:
                ax.axvline(switch + 0.5, color="grey", lw=0.6, ls=":")
        ax.set_xlabel("epoch (dotted line: top layers unfrozen)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("Fine-tuning learning curves")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

