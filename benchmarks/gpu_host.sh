#!/usr/bin/env bash
# On the offline GPU host (Python 3.12 with JAX and CUDA, no TensorFlow, Keras or Kedro): install the
# wheels carried in .whl (built here with ../shared/tools/gpu-wheelhouse, see docs/gpu.md), then run
# every GPU check in one go. The figures land in OUT_DIR/gpu_check.json, the whole log beside it.
# usage: bash benchmarks/gpu_host.sh OUT_DIR [gpu_check.py arguments...]
set -uo pipefail
out=${1:?usage: gpu_host.sh OUT_DIR [gpu_check.py arguments]}; shift
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site KERAS_BACKEND=jax KEDRO_DISABLE_TELEMETRY=true MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log" | grep -v " INFO \|^ \{20\}"
