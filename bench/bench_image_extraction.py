"""Image extraction throughput: plugin pipeline vs plain batched predict vs a naive loop.

    python bench/bench_image_extraction.py [--images 256] [--naive 48] [--data PATH]

For MobileNet alpha=0.75 (Keras, KERAS_HOME) and EfficientNet-Lite0 (PyTorch), measured side
by side in one run on the same Flipkart photos:
  pipeline  the plugin's transform(paths): parallel decode + resize + batched inference;
  plain     a batched forward pass on arrays decoded and preprocessed beforehand (decoding
            not counted: the best case for inference alone);
  naive     one image at a time: decode, preprocess, predict (on the first --naive images).
Models are loaded before timing. Ratios >= 0.9 (pipeline/plain) and >= 3 (pipeline/naive)
are the targets.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_keras(paths, naive_n, spec):
    from placedemarche.core.images import load_image
    from placedemarche.core.plugins import create_plugin

    ext = create_plugin("image", spec).fit(paths[:1])
    model, size = ext.model_, ext.image_size()
    ext.transform(paths[:8])  # warm-up (graph tracing)
    started = time.perf_counter()
    ext.transform(paths)
    pipeline = rate(len(paths), time.perf_counter() - started)

    arrays = ext.preprocess(np.stack([load_image(p, size) for p in paths]))
    model.predict(arrays[:8], batch_size=ext.batch_size, verbose=0)
    started = time.perf_counter()
    model.predict(arrays, batch_size=ext.batch_size, verbose=0)
    plain = rate(len(paths), time.perf_counter() - started)

    started = time.perf_counter()
    for p in paths[:naive_n]:
        model.predict(ext.preprocess(load_image(p, size)[None]), verbose=0)
    naive = rate(naive_n, time.perf_counter() - started)
    return pipeline, plain, naive


def bench_torch(paths, naive_n, spec):
    import torch

    from placedemarche.core.images import load_image
    from placedemarche.core.plugins import create_plugin

    ext = create_plugin("image", spec).fit(paths[:1])
    network = ext.network_
    ext.transform(paths[:8])
    started = time.perf_counter()
    ext.transform(paths)
    pipeline = rate(len(paths), time.perf_counter() - started)

    def forward(batch):
        tensor = torch.from_numpy(np.ascontiguousarray(ext._normalise(batch).transpose(0, 3, 1, 2)))
        with torch.inference_mode():
            return network.extract_features(tensor).mean(dim=(2, 3)).numpy()

    arrays = np.stack([load_image(p, ext.input_size) for p in paths])
    started = time.perf_counter()
    for i in range(0, len(arrays), ext.batch_size):
        forward(arrays[i:i + ext.batch_size])
    plain = rate(len(paths), time.perf_counter() - started)

    started = time.perf_counter()
    for p in paths[:naive_n]:
        forward(load_image(p, ext.input_size)[None])
    naive = rate(naive_n, time.perf_counter() - started)
    return pipeline, plain, naive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--naive", type=int, default=48)
    args = parser.parse_args()

    from placedemarche.core.catalog import load_catalog
    from placedemarche.core.datasets import resolve_data

    catalog = load_catalog(resolve_data(args.data)).validated(text=None, image=True)
    paths = catalog.image_paths[:args.images]
    print(f"{len(paths)} Flipkart photos (naive loop: first {args.naive}); images/s, higher is better")
    print()
    print("| model | pipeline | plain batched | naive loop | pipeline / plain | pipeline / naive |")
    print("|---|---|---|---|---|---|")
    for label, fn, spec in (("MobileNet a=0.75 (Keras)", bench_keras, "mobilenet:alpha=0.75"),
                            ("EfficientNet-Lite0 (torch)", bench_torch, "efficientnet-lite0")):
        pipeline, plain, naive = fn(paths, args.naive, spec)
        print(f"| {label} | {pipeline:.1f} | {plain:.1f} | {naive:.1f} | {pipeline / plain:.2f} | "
              f"{pipeline / naive:.2f} |", flush=True)


if __name__ == "__main__":
    main()
