#!/usr/bin/env bash
# Run here, on a machine with a network, before scripts/gpu_grid.sh runs on a GPU machine that has neither the
# notebook packages nor Fashion-MNIST: puts the wheels of papermill and ipykernel (and of what they need) for
# that machine's Python (PYVER, default 3.12) on x86-64 into .whl/, and Debian's Fashion-MNIST files into
# data/fashion-mnist/. Both folders are ignored by git; carry them with the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
FASHION_MNIST=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
mkdir -p .whl data/fashion-mnist
python3 -m pip download -q --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl papermill ipykernel
cp "$FASHION_MNIST"/{train,t10k}-{images-idx3,labels-idx1}-ubyte* data/fashion-mnist/
du -sh .whl data/fashion-mnist
