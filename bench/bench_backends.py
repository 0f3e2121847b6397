"""Inference backends side by side: images/s and texts/s of efficientnet-lite0 and bert for each
backend × precision, per-row cosine to the torch features, and the clustering ARI and 5-fold
accuracy with each.

    python bench/bench_backends.py --images 64 --texts 96 --rounds 3 --seeds 2
        [--speed bert] [--keras mobilenet:alpha=0.75]

Speed: every configuration is fitted (exported, calibrated) and warmed up first, then timed on
the same inputs in interleaved rounds (round 1: every configuration, round 2: every
configuration...), so a change of machine load hits them all alike; median and min seconds
per configuration, speed-ups against torch from the medians of the same run. Images go through
the plugin's whole pipeline (decode, resize, inference). Quality: features of the whole
Flipkart sample (1047 photos, 1050 texts, name + description) with each backend, clustered by
``evaluate_combinations`` with its default settings (t-SNE space), ``--seeds`` seeds, and
classified as ``pm train`` does (``classify.train``: 5 stratified folds, logreg head, its
default settings), one extractor at a time. ``--keras SPEC`` adds a Keras backbone's speed
with backend keras (the reference) vs openvino.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from placedemarche.data.catalog import load_catalog  # noqa: E402
from placedemarche.core.plugins import create_plugin  # noqa: E402

CONFIGS = [("torch", "fp32"), ("onnx", "fp32"), ("openvino", "fp32"), ("onnx", "int8"), ("openvino", "int8")]
# bf16 only where this processor has the arithmetic (detected, never assumed): OpenVINO runs it
from placedemarche.features.inference import has_bf16  # noqa: E402
if has_bf16():
    CONFIGS.append(("openvino", "bf16"))
KERAS_CONFIGS = [("keras", None), ("openvino", None)]  # the Keras backbones take no precision: fp32


def spec(name: str, backend: str, precision: str | None) -> str:
    options = f"backend='{backend}'" + (f",precision='{precision}'" if precision else "")
    return f"{name}{',' if ':' in name else ':'}{options}"


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def speed(kind: str, name: str, items: list, fit_items: list, rounds: int, configs=CONFIGS) -> list[dict]:
    extractors = {}
    for backend, precision in configs:
        ext = create_plugin(kind, spec(name, backend, precision))
        started = time.perf_counter()
        ext.fit(fit_items)
        ext.transform(items[:4])  # warm-up: first-call allocations, lazy initialisation
        extractors[(backend, precision)] = (ext, time.perf_counter() - started)
        print(f"  {name} {backend} {precision or 'fp32'}: ready in {extractors[(backend, precision)][1]:.1f} s", flush=True)
    seconds = {key: [] for key in extractors}
    outputs = {}
    for r in range(rounds):
        for key, (ext, _) in extractors.items():
            started = time.perf_counter()
            outputs[key] = ext.transform(items)
            seconds[key].append(time.perf_counter() - started)
        print(f"  round {r + 1}: " + ", ".join(f"{k[0]}/{k[1] or 'fp32'} {v[-1]:.1f}s" for k, v in seconds.items()), flush=True)
    reference = outputs[configs[0]]
    base = statistics.median(seconds[configs[0]])
    rows = []
    for key, times in seconds.items():
        cos = row_cosines(reference, outputs[key])
        median = statistics.median(times)
        rows.append({"extractor": name, "backend": key[0], "precision": key[1] or "fp32", "n": len(items),
                     "median_s": median, "min_s": min(times), "per_s": len(items) / median,
                     "best_per_s": len(items) / min(times), "speedup": base / median,
                     "cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
                     "setup_s": extractors[key][1]})
    return rows


def quality(catalog, seeds: int, configs: list[tuple[str, str]]) -> list[dict]:
    from placedemarche.features.cache import FeatureCache
    from placedemarche.classify import TrainConfig, train
    from placedemarche.evaluate.evaluator import EvaluationConfig, evaluate_combinations

    config = EvaluationConfig(seeds=tuple(range(seeds)))
    cache = FeatureCache(Path(tempfile.gettempdir()) / "pm-bench-backends-features")
    rows = []
    for backend, precision in configs:
        for kind, name in (("text", "bert"), ("image", "efficientnet-lite0")):
            started = time.perf_counter()
            kwargs = {kind: [spec(name, backend, precision)]}
            report = evaluate_combinations(catalog, config=config, cache=cache, fuse=False, **kwargs)
            run = report.runs[0]
            # pm train validates the catalogue first: products without a readable photo are dropped
            labelled = catalog.validated(text="both", image=kind == "image", labels=True, on_missing="drop")
            trained = train(labelled, TrainConfig(**kwargs, folds=5), cache=cache).summary["mean"]
            rows.append({"extractor": name, "backend": backend, "precision": precision,
                         "ari": {space: (run.mean("ari", space), run.sd("ari", space)) for space in run.spaces},
                         "accuracy": (trained["accuracy"], trained["accuracy_sd"]),
                         "macro_f1": (trained["macro_f1"], trained["macro_f1_sd"]),
                         "seconds": time.perf_counter() - started})
            print(f"  {name} {backend} {precision}: ARI " + ", ".join(
                f"{space} {m:.3f} ± {sd:.3f}" for space, (m, sd) in rows[-1]["ari"].items())
                + " | 5-fold accuracy {:.3f} ± {:.3f}".format(*rows[-1]["accuracy"])
                + f" ({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("PM_DATA_HOME", str(REPO.parent / "shared" / "data")) + "/flipkart")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--texts", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the clustering runs (0: skip them)")
    parser.add_argument("--quality-configs", default="torch/fp32,onnx/fp32,onnx/int8",
                        help="backend/precision pairs clustered and cross-validated on the whole sample")
    parser.add_argument("--keras", default=None, help="also time this Keras backbone, keras vs openvino")
    parser.add_argument("--speed", default="efficientnet-lite0,bert",
                        help="extractors timed (comma-separated; empty: quality only)")
    args = parser.parse_args()

    catalog = load_catalog(args.data)
    photos = [p for p in catalog.image_paths if p and Path(p).is_file()]
    texts = catalog.texts("both")
    step = max(1, len(photos) // args.images)
    images = photos[::step][:args.images]
    text_step = max(1, len(texts) // args.texts)
    sample_texts = texts[::text_step][:args.texts]
    print(f"{os.cpu_count()} CPUs, affinity {len(os.sched_getaffinity(0))}, load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    timed = args.speed.split(",")
    if "efficientnet-lite0" in timed:
        rows += speed("image", "efficientnet-lite0", images, photos, args.rounds)
    if "bert" in timed:
        rows += speed("text", "bert", sample_texts, sample_texts, args.rounds)
    if args.keras:
        rows += speed("image", args.keras, images, images, args.rounds, KERAS_CONFIGS)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}\n")
    print("| extractor | backend | precision | items/s (median) | items/s (best) | speed-up vs torch | "
          "cosine to torch, min / mean | set-up s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['extractor']} | {r['backend']} | {r['precision']} | {r['per_s']:.1f} | {r['best_per_s']:.1f} | "
              f"{r['speedup']:.2f} | {r['cos_min']:.6f} / {r['cos_mean']:.6f} | {r['setup_s']:.0f} |", flush=True)
    if args.seeds:
        configs = [tuple(c.split("/")) for c in args.quality_configs.split(",")]
        q = quality(catalog, args.seeds, configs)
        spaces = list(q[0]["ari"])
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
        print("\n| extractor | backend | precision | " + " | ".join(f"ARI {s}" for s in spaces)
              + " | 5-fold accuracy | 5-fold macro-F1 |")
        print("|---|---|---|" + "---|" * (len(spaces) + 2))
        for r in q:
            print(f"| {r['extractor']} | {r['backend']} | {r['precision']} | "
                  + " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in r["ari"].values())
                  + " | {:.3f} ± {:.3f}".format(*r["accuracy"]) + " | {:.3f} ± {:.3f} |".format(*r["macro_f1"]))


if __name__ == "__main__":
    main()
