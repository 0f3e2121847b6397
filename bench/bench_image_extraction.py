"""Image extraction throughput: plugin pipeline vs plain batched predict vs a naive loop.

    python bench/bench_image_extraction.py [--images 256] [--naive 48] [--rounds 2] [--data PATH]

For MobileNet alpha=0.75 (Keras, KERAS_HOME) and EfficientNet-Lite0 (PyTorch), measured side
by side in one run on the same Flipkart photos:
  pipeline  the plugin's transform(paths): parallel decode + resize + batched inference;
  plain     a batched forward pass on arrays decoded and preprocessed beforehand (decoding
            not counted: the best case for inference alone);
  naive     one image at a time: decode, preprocess, predict (on the first --naive images).
Models are loaded and warmed up before timing; the three are timed in turn, ``--rounds``
times, and the best rate of each is kept (the machine may be shared). The torch baselines use
the plugin's own network and thread count. Ratios >= 0.9 (pipeline/plain) and >= 3 (pipeline/naive) are
the targets.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def timed(fn, n: int) -> float:
    started = time.perf_counter()
    fn()
    return rate(n, time.perf_counter() - started)


def best_of(rounds: int, contenders: dict) -> dict:
    """Each contender is (fn, n); run them in turn ``rounds`` times, keep each one's best rate."""
    best = {name: 0.0 for name in contenders}
    for _ in range(rounds):
        for name, (fn, n) in contenders.items():
            best[name] = max(best[name], timed(fn, n))
    return best


def bench_keras(paths, naive_n, spec, rounds):
    from placedemarche.data.images import load_image
    from placedemarche.core.plugins import create_plugin

    ext = create_plugin("image", spec).fit(paths[:1])
    model, size = ext.model_, ext.image_size()
    ext.transform(paths[:8])  # warm-up (graph tracing)
    arrays = ext.preprocess(np.stack([load_image(p, size) for p in paths]))
    model.predict(arrays[:8], batch_size=ext.batch_size, verbose=0)
    model.predict(arrays[:1], verbose=0)

    def naive():
        for p in paths[:naive_n]:
            model.predict(ext.preprocess(load_image(p, size)[None]), verbose=0)

    return best_of(rounds, {
        "pipeline": (lambda: ext.transform(paths), len(paths)),
        "plain": (lambda: model.predict(arrays, batch_size=ext.batch_size, verbose=0), len(paths)),
        "naive": (naive, naive_n),
    })


def bench_torch(paths, naive_n, spec, rounds):
    import torch

    from placedemarche.data.images import load_image
    from placedemarche.core.plugins import create_plugin

    ext = create_plugin("image", spec).fit(paths[:1])
    ext.transform(paths[:8])
    features = ext._pooled_features()  # the plugin's own (folded, channels-last) network
    arrays = np.stack([load_image(p, ext.input_size) for p in paths])

    def forward(batch):
        tensor = torch.from_numpy(ext._normalise(batch)).permute(0, 3, 1, 2)
        with torch.inference_mode():
            return features(tensor.contiguous(memory_format=torch.channels_last)).numpy()

    def plain():
        for i in range(0, len(arrays), ext.batch_size):
            forward(arrays[i:i + ext.batch_size])

    def naive():
        for p in paths[:naive_n]:
            forward(load_image(p, ext.input_size)[None])

    def same_threads(fn):
        def run():
            previous = torch.get_num_threads()
            torch.set_num_threads(ext.inference_threads())
            try:
                fn()
            finally:
                torch.set_num_threads(previous)
        return run

    return best_of(rounds, {
        "pipeline": (lambda: ext.transform(paths), len(paths)),
        "plain": (same_threads(plain), len(paths)),
        "naive": (same_threads(naive), naive_n),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--naive", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from placedemarche.data.catalog import load_catalog
    from placedemarche.data.datasets import resolve_data

    catalog = load_catalog(resolve_data(args.data)).validated(text=None, image=True)
    paths = catalog.image_paths[:args.images]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    print(f"{len(paths)} Flipkart photos (naive loop: first {args.naive}), best of {args.rounds} rounds; "
          f"{cores} CPU cores{load}; images/s, higher is better")
    print()
    print("| model | pipeline | plain batched | naive loop | pipeline / plain | pipeline / naive |")
    print("|---|---|---|---|---|---|")
    for label, fn, spec in (("MobileNet a=0.75 (Keras)", bench_keras, "mobilenet:alpha=0.75"),
                            ("EfficientNet-Lite0 (torch)", bench_torch, "efficientnet-lite0")):
        rates = fn(paths, args.naive, spec, args.rounds)
        pipeline, plain, naive = rates["pipeline"], rates["plain"], rates["naive"]
        print(f"| {label} | {pipeline:.1f} | {plain:.1f} | {naive:.1f} | {pipeline / plain:.2f} | "
              f"{pipeline / naive:.2f} |", flush=True)


if __name__ == "__main__":
    main()
