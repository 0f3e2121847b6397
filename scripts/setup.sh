#!/usr/bin/env bash
# One-time setup: a virtualenv with placedemarche and the extras asked for.
#
#   bash scripts/setup.sh                 # everything (Keras, PyTorch, USE, UMAP) + test tools
#   bash scripts/setup.sh --extras core   # the core only: no TensorFlow, no torch
#   bash scripts/setup.sh --venv DIR      # another virtualenv location (default .venv)
#
# torch is installed *before* the extras that depend on it, pinned to TORCH_SPEC
# (default torch==2.13.0), so pip does not pull a multi-GB CUDA build on CPU machines.
# Set TORCH_INDEX_URL (e.g. the PyTorch CPU wheel index) to install torch from there.
set -euo pipefail

venv=".venv"
extras="all"
dev=1
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --extras) extras="$2"; shift 2 ;;
    --no-dev) dev=0; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
python3 -c 'import sys; assert sys.version_info >= (3, 11), "placedemarche needs Python >= 3.11"'
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install --quiet --upgrade pip

case ",$extras," in
  *,all,*|*,torch,*)
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
      $pip install --quiet "${TORCH_SPEC:-torch==2.13.0}" --index-url "$TORCH_INDEX_URL"
    else
      $pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
    fi ;;
esac

spec="."
wanted="$extras"
[ "$extras" = "core" ] && wanted=""
[ "$dev" = 1 ] && wanted="${wanted:+$wanted,}dev"
[ -n "$wanted" ] && spec=".[$wanted]"
$pip install --quiet -e "$spec"
if [ "$dev" = 1 ]; then
  # The example third-party plugin: the tests check that pm finds it through its entry point.
  $pip install --quiet ./examples/placedemarche-colour-histogram
fi
echo "placedemarche installed in $venv: run '. $venv/bin/activate' then 'pm --help'"
