#!/usr/bin/env bash
# One command from a fresh clone: create .venv, install rscore + the four plugins + test tools, then run the main job
# (landslide-prone areas on the bundled synthetic terrain) so you see real output in ./rscore-out/.
#
#   bash scripts/setup.sh            # install and run the example
#   bash scripts/setup.sh --no-run   # install only
#
# Machines without an NVIDIA GPU get the CPU build of torch through scripts/constraints-cpu.txt (PIP_CONSTRAINT, so
# that isolated builds obey it too). With a GPU, pip keeps/gets a CUDA torch: nothing CPU-specific is in the packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
RUN_EXAMPLE=1
[ "${1:-}" = "--no-run" ] && RUN_EXAMPLE=0

if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
if ! command -v nvidia-smi >/dev/null 2>&1 && [ -z "${RSCORE_NO_CPU_CONSTRAINT:-}" ]; then
    export PIP_CONSTRAINT="$PWD/scripts/constraints-cpu.txt"
    echo "==> no NVIDIA GPU found: pinning the CPU build of torch ($PIP_CONSTRAINT)"
fi

export SAM2_BUILD_CUDA=${SAM2_BUILD_CUDA:-$(command -v nvidia-smi >/dev/null 2>&1 && echo 1 || echo 0)}  # sam2 sdist: no CUDA kernels without a GPU
echo "==> installing rscore and plugins (editable)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -e ".[embeddings,models,detectors,sam2,finetune,flows,openai,service,test]" \
    -e plugins/earth -e plugins/surgical -e plugins/safety -e plugins/underwater 2>&1 \
    | grep -vE "^WARNING: Location .* is ignored" || true
.venv/bin/python -m pip check >/dev/null 2>&1 || .venv/bin/python -m pip check | head -20
.venv/bin/rscore plugins list

if [ "$RUN_EXAMPLE" = 1 ]; then
    EXAMPLE=plugins/earth/src/rscore_earth/data/example_dem.tif  # synthetic terrain, see rscore_earth/synthetic.py
    echo "==> rscore run --plugin earth $EXAMPLE \"landslide-prone areas\""
    .venv/bin/rscore run --plugin earth "$EXAMPLE" "landslide-prone areas" --out rscore-out/example
fi
