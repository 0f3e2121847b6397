"""Speed of `pm evaluate`, first run vs cached re-run: a release and the working tree side by side.

    python bench/bench_evaluate_speed.py [--baseline fad9957] [--rounds 1] [--seeds 3]
                                         [--text tfidf --text bert] [--image efficientnet-lite0]
                                         [--warm-features] [--skip-baseline] [--live-tree] [--keep]
                                         [--target-speedup 1.8]

The release is checked out in a temporary git worktree (removed at the end) and run with the
same interpreter, its directory first on PYTHONPATH so its code is imported instead of the
editable install (the path imported is printed). Each version runs the same command twice
with its own fresh cache (PM_CACHE_DIR): "first" (empty cache) and "cached" (the identical
command again: features cached, and t-SNE maps for versions that cache them). The runs are
interleaved (release first, tree first, release cached, tree cached) so a change of load on
a shared machine hits both versions alike. The tree's package is copied at the start (unless
--live-tree), so edits made while the bench runs do not mix two versions of the code. Wall
time and CPU time (user + sys of the process and the workers it waited for, from
getrusage(RUSAGE_CHILDREN)) are measured per run.

With --warm-features each version's cache first receives the text and image features from
an untimed extraction (that version's own code), so "first" measures the clustering alone,
not the slow pretrained-model extraction.

Targets printed: the tree's cached re-run at most 15 % of its first run (wall), and the
tree's first run at least 2x (``--target-speedup``) faster than the release's first run (wall).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RELEASE = "fad9957"  # the last release before the clustering-speed work

CLI = "from placedemarche.cli.main import cli; cli()"
WHERE = "import placedemarche; print(placedemarche.__file__)"
# The same extraction as `pm evaluate` (same catalogue options, same cache keys), nothing else.
WARM = """
import json, sys
from placedemarche.cli.options import load_catalog_from_options
from placedemarche.features.cache import FeatureCache
from placedemarche.features.extraction import extract_features, extractor_inputs
from placedemarche.core.plugins import create_plugin
text, image, data = json.loads(sys.argv[1])
options = dict(data=data, id_column=None, name_column=None, description_column=None, image_column=None,
               label_column=None, image_dir=None, on_missing="drop", text_field="both")
catalog = load_catalog_from_options(options, text=bool(text), image=bool(image), labels=True)
cache = FeatureCache()
for kind, specs in (("text", text), ("image", image)):
    for spec in specs:
        extractor = create_plugin(kind, spec)
        feats = extract_features(extractor, extractor_inputs(extractor, catalog, "both"), cache=cache)
        print(f"  {kind} {spec}: {feats.matrix.shape}, "
              + ("already cached" if feats.from_cache else f"extracted in {feats.seconds:.1f} s"))
"""


@dataclass
class Version:
    name: str  # "release" or "tree"
    root: Path  # put first on PYTHONPATH
    label: str  # what it is, for the header


@dataclass
class Measure:
    version: str
    run: str  # "first" or "cached"
    round: int
    wall: float
    cpu: float
    load1: float
    results: dict = field(default_factory=dict)  # results.json

    def ari_tsne(self) -> dict[str, float]:
        return {r["name"]: r["spaces"].get("tsne", {}).get("ari_mean", float("nan"))
                for r in self.results.get("runs", [])}

    def phases(self) -> tuple[float, float]:
        """Seconds pm itself reports: feature extraction or cache reads (each extractor once),
        and preparing + clustering the runs (sum of runs[*].seconds)."""
        feats = {spec: f["seconds"] for r in self.results.get("runs", []) for spec, f in r["features"].items()}
        return sum(feats.values()), sum(r["seconds"] for r in self.results.get("runs", []))

    def features_cached(self) -> str:
        flags = {spec: f["cached"] for r in self.results.get("runs", []) for spec, f in r["features"].items()}
        return f"{sum(flags.values())}/{len(flags)}" if flags else "?"

    def maps_cached(self) -> str:
        runs = self.results.get("runs", [])
        if not runs or "tsne_maps_from_cache" not in runs[0]:
            return "-"  # this version does not cache t-SNE maps
        seeds = len(self.results.get("config", {}).get("seeds", [])) or 1
        return f"{sum(r['tsne_maps_from_cache'] for r in runs)}/{len(runs) * seeds}"


def environment(version: Version, cache_dir: Path, shared: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(version.root), PM_CACHE_DIR=str(cache_dir), PM_SHARED=str(shared),
               KERAS_HOME=str(shared / "models" / "keras"), NLTK_DATA=str(shared / "models" / "nltk_data"),
               PM_DATA_HOME=str(shared / "data"))
    return env


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_logged(cmd: list[str], env: dict, log: Path, cwd: Path, timeout: float) -> tuple[float, float]:
    """Run ``cmd``; return its wall and CPU seconds. Output goes to ``log``; a failure exits."""
    cpu_before = children_cpu()
    started = time.perf_counter()
    with open(log, "w") as out:
        try:
            proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"timed out after {timeout:.0f} s: see {log}")
    wall = time.perf_counter() - started
    cpu = children_cpu() - cpu_before
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise SystemExit(f"exit status {proc.returncode}: {' '.join(cmd[3:])}\n--- {log} (tail) ---\n{tail}")
    return wall, cpu


def evaluate_args(args, out: Path) -> list[str]:
    cmd = ["evaluate"]
    for spec in args.text:
        cmd += ["--text", spec]
    for spec in args.image:
        cmd += ["--image", spec]
    cmd += ["--seeds", str(args.seeds), "--no-progress", "--out", str(out)]
    if args.data:
        cmd += ["--data", args.data]
    return cmd


def check_import(python: str, version: Version, env: dict, cwd: Path) -> str:
    where = subprocess.run([python, "-c", WHERE], env=env, cwd=cwd, capture_output=True, text=True, check=True)
    path = Path(where.stdout.strip()).resolve()
    if version.root.resolve() not in path.parents:
        raise SystemExit(f"{version.name}: imported {path}, not the code under {version.root}")
    return str(path)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=RELEASE, help="commit of the release to compare against")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the four runs (medians printed)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--text", action="append", default=None, help="default: tfidf and bert")
    parser.add_argument("--image", action="append", default=None, help="default: efficientnet-lite0")
    parser.add_argument("--data", default=None, help="catalogue (default: the Flipkart sample in PM_DATA_HOME)")
    parser.add_argument("--warm-features", action="store_true",
                        help="extract features (untimed) before each version's first run: time clustering only")
    parser.add_argument("--skip-baseline", action="store_true", help="time the working tree only")
    parser.add_argument("--live-tree", action="store_true",
                        help="import the tree's package in place instead of a copy taken at the start")
    parser.add_argument("--keep", action="store_true", help="keep outputs, caches and logs (path printed)")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("PM_SHARED", REPO.parent / "shared")))
    parser.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python")
                        if (REPO / ".venv" / "bin" / "python").exists() else sys.executable)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per pm run")
    parser.add_argument("--target-speedup", type=float, default=2.0,
                        help="first-run speed-up over the release to print as the target (issue 13: 1.8 "
                             "for --text bert --image efficientnet-lite0)")
    args = parser.parse_args()
    args.text = args.text if args.text is not None else ["tfidf", "bert"]
    args.image = args.image if args.image is not None else ["efficientnet-lite0"]

    tmp = Path(tempfile.mkdtemp(prefix="pm-bench-evaluate-"))
    worktree = tmp / "release"
    versions: list[Version] = []
    try:
        if not args.skip_baseline:
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.baseline],
                           check=True, capture_output=True)
            described = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s", args.baseline],
                                       capture_output=True, text=True).stdout.strip()
            versions.append(Version("release", worktree, f"release {described[:90]}"))
        head = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h"],
                              capture_output=True, text=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(REPO), "diff", "--shortstat"],
                                 capture_output=True, text=True).stdout.strip() or "no local changes"
        label = f"working tree (HEAD {head} + {changed})"
        if args.live_tree:
            versions.append(Version("tree", REPO, label))
        else:
            # the package as it is now, so edits made while the bench runs change neither run
            shutil.copytree(REPO / "placedemarche", tmp / "tree" / "placedemarche",
                            ignore=shutil.ignore_patterns("__pycache__"))
            versions.append(Version("tree", tmp / "tree", f"{label}, package copied at the start"))
        measures = bench(args, versions, tmp)
    finally:
        if worktree.exists():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                           capture_output=True)
        if args.keep:
            print(f"\noutputs, caches and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(args, versions, measures)


def bench(args, versions: list[Version], tmp: Path) -> list[Measure]:
    command = " ".join(evaluate_args(args, Path("<out>"))).replace(" --out <out>", "")
    mode = "features pre-extracted (untimed) before 'first'" if args.warm_features else "true first run (empty cache)"
    print(f"# pm {command}")
    print(f"# mode: {mode}; {args.rounds} round(s); python {args.python}")
    print(f"# cpus: {os.cpu_count()} (affinity {len(os.sched_getaffinity(0))}); "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for version in versions:
        env = environment(version, tmp / "unused-cache", args.shared)
        print(f"# {version.name}: {version.label}\n#   imports {check_import(args.python, version, env, tmp)}")
    sys.stdout.flush()

    measures: list[Measure] = []
    for round_ in range(1, args.rounds + 1):
        caches = {v.name: tmp / f"cache-{v.name}-{round_}" for v in versions}
        if args.warm_features:
            for version in versions:
                env = environment(version, caches[version.name], args.shared)
                log = tmp / f"warm-{version.name}-{round_}.log"
                started = time.perf_counter()
                run_logged([args.python, "-c", WARM, json.dumps([args.text, args.image, args.data])],
                           env, log, tmp, args.timeout)
                print(f"round {round_}: {version.name} features extracted (untimed) in "
                      f"{time.perf_counter() - started:.1f} s")
                print(log.read_text().rstrip())
        for run in ("first", "cached"):
            for version in versions:
                env = environment(version, caches[version.name], args.shared)
                out = tmp / f"{version.name}-{run}" if args.rounds == 1 else tmp / f"{version.name}-{run}-{round_}"
                load1 = os.getloadavg()[0]
                wall, cpu = run_logged([args.python, "-c", CLI, *evaluate_args(args, out)], env,
                                       tmp / f"{out.name}.log", tmp, args.timeout)
                results = json.loads((out / "results.json").read_text())
                measures.append(Measure(version.name, run, round_, wall, cpu, load1, results))
                print(f"round {round_}: {version.name:7s} {run:6s} wall {wall:7.1f} s  CPU {cpu:7.1f} s  "
                      f"(load {load1:.2f} at start)")
                sys.stdout.flush()
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return measures


def report(args, versions: list[Version], measures: list[Measure]) -> None:
    def pick(version, run):
        return [m for m in measures if m.version == version and m.run == run]

    def median(version, run, what):
        found = pick(version, run)
        return statistics.median(getattr(m, what) for m in found) if found else float("nan")

    print()
    print("| version | run | round | wall s | CPU s | CPU/wall | cached/first wall | cached/first CPU "
          "| features s | clustering s | rest s | load1 at start | features cached | t-SNE maps cached |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m in measures:
        first = next(f for f in measures if f.version == m.version and f.round == m.round and f.run == "first")
        rel = ("-", "-") if m.run == "first" else (f"{m.wall / first.wall:.1%}", f"{m.cpu / first.cpu:.1%}")
        feats, clustering = m.phases()
        print(f"| {m.version} | {m.run} | {m.round} | {m.wall:.1f} | {m.cpu:.1f} | {ratio(m.cpu, m.wall):.2f} "
              f"| {rel[0]} | {rel[1]} | {feats:.1f} | {clustering:.1f} | {m.wall - feats - clustering:.1f} "
              f"| {m.load1:.2f} | {m.features_cached()} | {m.maps_cached()} |")
    print("(features s, clustering s: as pm reports them in results.json; rest s: wall minus both "
          "= start-up, catalogue, reports and plots)")

    names = [v.name for v in versions]
    if "release" in names:
        print()
        print("| run | release wall s | tree wall s | speed-up wall | release CPU s | tree CPU s | speed-up CPU |")
        print("|---|---|---|---|---|---|---|")
        for run in ("first", "cached"):
            ow, nw = median("release", run, "wall"), median("tree", run, "wall")
            oc, nc = median("release", run, "cpu"), median("tree", run, "cpu")
            print(f"| {run} | {ow:.1f} | {nw:.1f} | {ratio(ow, nw):.2f}x "
                  f"| {oc:.1f} | {nc:.1f} | {ratio(oc, nc):.2f}x |")
    if args.rounds > 1:
        print(f"(medians over {args.rounds} rounds)")

    print()
    last_round = [m for m in measures if m.round == args.rounds]
    combos = list(last_round[0].ari_tsne()) if last_round else []
    print("ARI t-SNE mean (results.json runs[*].spaces.tsne.ari_mean, "
          f"{args.seeds} seeds, round {args.rounds}):")
    print("| features | " + " | ".join(f"{m.version} {m.run}" for m in last_round) + " |")
    print("|---|" + "---|" * len(last_round))
    for combo in sorted(combos):
        print(f"| {combo} | " + " | ".join(f"{m.ari_tsne().get(combo, float('nan')):.3f}" for m in last_round) + " |")

    print()
    tree_first, tree_cached = median("tree", "first", "wall"), median("tree", "cached", "wall")
    share = ratio(tree_cached, tree_first)
    print(f"target: tree cached re-run <= 15 % of its first run: {share:.1%} -> "
          + ("OK" if share <= 0.15 else "NOT MET"))
    if "release" in names:
        speedup = ratio(median("release", "first", "wall"), tree_first)
        print(f"target: tree first run >= {args.target_speedup:g}x faster than the release's first run: "
              f"{speedup:.2f}x -> " + ("OK" if speedup >= args.target_speedup else "NOT MET"))
    if args.warm_features:
        print("(--warm-features: 'first' runs read pre-extracted features; they time the clustering phase)")


if __name__ == "__main__":
    main()
