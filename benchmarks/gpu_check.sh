#!/usr/bin/env bash
# The GPU check in one call, on a CUDA PyTorch image (torch, triton, transformers) with this checkout
# installed by `python3 -m pip install --no-deps -e .` (no DeepSpeed, no datasets on any step's path):
#
#   benchmarks/gpu_check.sh OUT_DIR              # one GPU, under 7 minutes (step limits add up to 420 s)
#   benchmarks/gpu_check.sh OUT_DIR --cpu-smoke  # the same steps at tiny shapes on the CPU, Triton interpreted
#
# Writes 8 files to OUT_DIR: summary.md and summary.json (every step's figures, how each step ended, and
# the rows for ernievil_ds.pretraining.kernel_measurements), tests.log, attention_b64.log,
# attention_b512.log, loss.log, cuda_graph.log, base_step.log. A step that fails or runs out of time is
# recorded and the next one runs. The image's torch and triton are used as they are: nothing is put ahead
# of them on PYTHONPATH.
set -uo pipefail
if [[ $# -lt 1 || $1 == -* ]]; then
  echo "usage: $0 OUT_DIR [--cpu-smoke]" >&2
  exit 2
fi
out=$1
smoke=${2:-}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
export TOKENIZERS_PARALLELISM=false

statuses=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, go on on failure
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local status=$?
  local ended="exit $status after $((SECONDS - start)) s (limit $limit s); $(tail -n 1 "$out/$name.log")"
  echo "$name: $ended" | tee -a "$out/$name.log"
  statuses+=("$name=$ended")
}

if [[ $smoke == --cpu-smoke ]]; then
  step tests 110 env TRITON_INTERPRET=1 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_dropout_rng.py
else
  step tests 110 python3 -m pytest -q -p no:cacheprovider tests/kernels
fi
step attention_b64 80 python3 benchmarks/gpu_check.py attention --batch 64 --out "$out" $smoke
step attention_b512 40 python3 benchmarks/gpu_check.py attention --batch 512 --out "$out" $smoke
step loss 45 python3 benchmarks/gpu_check.py loss --out "$out" $smoke
step cuda_graph 45 python3 benchmarks/gpu_check.py cuda-graph --out "$out" $smoke
step base_step 100 python3 benchmarks/gpu_check.py base-step --out "$out" $smoke
python3 benchmarks/gpu_check.py status --out "$out" $smoke --status "${statuses[@]}" > /dev/null
echo "summary: $out/summary.md"
