"""Start-up time of `pm list-extractors`, against a bare interpreter start in the same run.

    python bench/bench_startup.py [--runs 7]

Prints the median wall time of each command and their ratio; also checks that neither
TensorFlow nor torch was imported. The target is under 0.6 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    pm = shutil.which("pm") or sys.exit("pm is not on PATH: activate the virtualenv first")
    subprocess.run([pm, "list-extractors"], check=True, capture_output=True)  # warm the disk cache
    bare = timed([sys.executable, "-c", "pass"], args.runs)
    listing = timed([pm, "list-extractors"], args.runs)
    heavy = subprocess.run(
        [sys.executable, "-c",
         "import sys; from click.testing import CliRunner; from placedemarche.cli.main import cli;"
         "CliRunner().invoke(cli, ['list-extractors']);"
         "print(','.join(m for m in ('tensorflow', 'torch') if m in sys.modules) or 'none')"],
        check=True, capture_output=True, text=True).stdout.strip()
    print(f"python -c pass        median {bare:.3f} s")
    print(f"pm list-extractors    median {listing:.3f} s  ({listing / bare:.1f}x a bare start)")
    print(f"heavy modules imported: {heavy}")
    print("target: < 0.600 s ->", "OK" if listing < 0.6 else "TOO SLOW")


if __name__ == "__main__":
    main()
