#!/usr/bin/env bash
# The GPU check in one script: install what the card's image lacks from a wheel folder, run the GPU tests
# and the benchmarks, and write their logs and tables under OUT. Budget: under 8 minutes on one H100/H200.
#
#   OUT=runs/gpu_check benchmarks/gpu_check.sh [WHEEL_DIR]
#
# WHEEL_DIR (default .whl/) holds wheels for packages the image lacks (DeepSpeed and its needs; see the
# project's wheel recipe); they go to a private target folder, nothing else is touched. The project itself
# is used from this checkout through PYTHONPATH (the root for ernievil_ds, kernels/ for ernievil_ds_kernels).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu_check}
wheels=${1:-.whl}
mkdir -p "$out"
site=$(mktemp -d)
if compgen -G "$wheels/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site/lib" "$wheels"/*.whl
fi
export PYTHONPATH="$PWD/kernels:$PWD:$site/lib${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/lib/bin:$PATH"
# DeepSpeed's op builder cannot parse the "9.0a" some images set.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST//a/}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, go on on failure
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*" | tee -a "$out/summary.txt"
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local status=$?
  echo "   exit $status after $((SECONDS - start)) s" | tee -a "$out/summary.txt"
  tail -n 40 "$out/$name.log"
}

{ date -u; git rev-parse --short HEAD; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } \
  > "$out/summary.txt" 2>&1
step tests 150 python -m pytest -q -p no:cacheprovider tests/kernels tests/test_compile.py
step bench_co_attention 120 python benchmarks/bench_co_attention.py --dtype bf16 --mode fwd+bwd \
  --save-path "$out/co_attention"
step bench_masked_token_loss 60 python benchmarks/bench_masked_token_loss.py --dtype bf16 \
  --save-path "$out/masked_token_loss"
step bench_pretrain 180 python benchmarks/bench_pretrain.py --configs ds_configs/h100_8.json --num-gpus 1 \
  --preset base --attn sdpa triton --compile off on --steps 12 --boxes-per-image 36 --num-workers 4 \
  --work-dir "$out/pretrain"
step bench_loader 60 python benchmarks/bench_loader.py --workers 0 2 4 8
echo "logs and tables in $out"
