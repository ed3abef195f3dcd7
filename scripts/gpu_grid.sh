#!/usr/bin/env bash
# Tables 1 and 3 on Fashion-MNIST on one GPU (docs/training.md): the grid into results/fashion-mnist/ (runs/,
# tables/), its log, GPU and wall time into results/fashion-mnist/gpu/, then the report regenerated. On a
# machine where torch sees a GPU, from any directory:
#   bash scripts/gpu_grid.sh
# Without Debian's dataset-fashion-mnist, the four idx files are read from data/fashion-mnist/ (or set
# DATA=fashion-mnist:DIR); without papermill and ipykernel, the wheels in .whl/ are installed into /tmp/site
# first (scripts/gpu_grid_prepare.sh puts both there, on a machine with a network). Stopped by a time limit,
# the same command continues: finished runs are kept, an interrupted one resumes from its last epoch. Where
# $OUT is set (a lent machine returns only the files under it), results/fashion-mnist/ without checkpoints
# and per-run notebooks is also packed into $OUT/fashion-mnist.tar.gz (unpack it in the repository root).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONUNBUFFERED=1
if ! "$PY" -c "import papermill, ipykernel" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -z "${DATA:-}" ]; then
  DATA=fashion-mnist
  [ -d /usr/share/datasets/fashion-mnist ] || DATA=fashion-mnist:data/fashion-mnist
fi
LOG=results/fashion-mnist/gpu
mkdir -p "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$LOG/nvidia-smi.csv" 2>&1
[ -f "$LOG/steps.csv" ] || echo "step,exit_code,seconds" > "$LOG/steps.csv"
start=$EPOCHREALTIME
"$PY" -m studies.notebooks all --data "$DATA" --device cuda --train "$@" 2>&1 | tee -a "$LOG/grid.log"
rc=${PIPESTATUS[0]}
echo "grid,$rc,$(awk "BEGIN {print $EPOCHREALTIME - $start}")" >> "$LOG/steps.csv"
"$PY" -m studies.report
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  tar czf "$OUT/fashion-mnist.tar.gz" --exclude='*.pt' --exclude='results/fashion-mnist/runs/*/*.ipynb' \
    results/fashion-mnist
fi
cat "$LOG/steps.csv"
exit "$rc"
