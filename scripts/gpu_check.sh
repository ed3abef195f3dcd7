#!/usr/bin/env bash
# One prepared check on a CUDA machine: the Table 2 study and a training smoke run on the GPU,
# and the training-step benchmark, with every log and timing written under $OUT (default
# results/gpu). Runs anywhere torch sees a GPU:
#   OUT=results/gpu bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1
"$PY" -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name(0))" > "$OUT/versions.txt" 2>&1
echo "step,exit_code,seconds" > "$OUT/steps.csv"
step() {  # step NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name: $*"
  local start=$EPOCHREALTIME
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name,$rc,$(awk "BEGIN {print $EPOCHREALTIME - $start}")" >> "$OUT/steps.csv"
  tail -n 20 "$OUT/$name.log"
}
step reconstruction_cuda 90 "$PY" -m studies.reconstruction --trials 100 --device cuda --out "$OUT/reconstruction_cuda"
step reconstruction_cpu 90 "$PY" -m studies.reconstruction --trials 100 --device cpu --out "$OUT/reconstruction_cpu"
step train_digits_cuda 120 "$PY" -m studies.train --device cuda --quiet --out "$OUT/train_digits_cuda"
step bench_train_cuda 150 "$PY" -m studies.bench_train --device cuda --batch-size 128 --steps 10 --warmup 3 \
  --repeats 1 --methods real direct xnor case1 case4 --out "$OUT/bench_train_cuda"
cat "$OUT/steps.csv"
