#!/usr/bin/env bash
# Installs everything minconv needs on a fresh Debian/Ubuntu machine:
# the Fashion-MNIST package, the Python dependencies (PyTorch CPU for the
# parity tests and benchmarks), and minconv itself with its Cython kernels.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  $SUDO apt-get install -y -q dataset-fashion-mnist \
    || { $SUDO apt-get update -q && $SUDO apt-get install -y -q dataset-fashion-mnist; }
fi

PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check \
  "numpy>=1.24" "cython>=3.0" "setuptools>=64" wheel pillow tqdm matplotlib threadpoolctl pytest "torch==2.13.0"
$PY -m pip install -q --disable-pip-version-check --no-build-isolation -e .
$PY -c "import minconv._kernels as k; assert k.CPU_BUILT, 'Cython kernels failed to build'; print('minconv installed; Cython kernels built')"
