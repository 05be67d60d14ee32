#!/usr/bin/env bash
# Download, here, the wheels a stock CUDA PyTorch image lacks for tools/gpu_check.sh, so a GPU
# machine without network access can run it: tools/gpu_check.sh --wheels .whl
#
# Usage: tools/gpu_wheels.sh [DIR] [PYTHON_VERSION]   (default .whl and 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.whl}
version=${2:-3.12}
mkdir -p "$dir"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dir" \
    nibabel pydicom SimpleITK platformdirs dynamic_network_architectures
du -sh "$dir"
