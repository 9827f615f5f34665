#!/usr/bin/env bash
# The GPU check: run the test suite with the CuPy backend available and the
# training / generation benchmarks against PyTorch CUDA, writing everything
# (logs, and the benchmarks' JSON: train_*.json, generate.json) to a results
# folder. Installs nothing from the network: the machine must have numpy,
# cupy, torch (CUDA), transformers, tokenizers, safetensors, tqdm, pytest and
# hypothesis already.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default: benchmarks/results/gpu)
#   (on a lent device machine: bash benchmarks/gpu_check.sh "$OUT/gpu", so the results come back)
#
# Sized for a lent machine's budget (one command of at most 10 minutes): the
# stages run most important first, each under its own time limit (about 10
# minutes in all at the very most, far less when nothing hangs), so a stage
# that hangs costs only its own share and what finished is kept. The first
# stage also fills CuPy's kernel cache. stages.txt records each stage's status
# and seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # minillm from this tree, no install

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python - <<'PY'
import cupy, numpy, torch
print("cupy", cupy.__version__, "numpy", numpy.__version__, "torch", torch.__version__,
      "cuda", torch.cuda.is_available())
PY
} > "$OUT/env.txt" 2>&1

status=0
: > "$OUT/stages.txt"
stage() {  # stage NAME LIMIT_S COMMAND...: run COMMAND under a time limit, log to OUT/NAME.txt
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$OUT/stages.txt"
}

# 1. The GPU-marked tests alone, verbosely: these must pass, not skip.
stage pytest_gpu 120 python -m pytest -v -m gpu -rs -p no:cacheprovider
grep -q "needs CuPy" "$OUT/pytest_gpu.txt" && status=1
# 2. Training step vs PyTorch CUDA eager on a config that occupies the GPU (4x wider,
#    4x the batch), FLAN-T5's gated-gelu variant; then without dropout, since the
#    dropout masks are drawn on the host (one random stream for both backends) and may
#    bound the GPU step.
stage train_large 150 python benchmarks/bench_train.py --device cuda --variant gated-gelu \
  --repeats 2 --steps 5 --config-scale 4 --out "$OUT/train_large.json"
stage train_large_nodropout 100 python benchmarks/bench_train.py --device cuda --variant gated-gelu \
  --repeats 2 --steps 5 --config-scale 4 --dropout 0 --out "$OUT/train_large_nodropout.json"
# 3. The reference config, both variants.
stage train_reference 100 python benchmarks/bench_train.py --device cuda --repeats 2 --steps 5 \
  --out "$OUT/train_reference.json"
# 4. Generation vs transformers' generate on torch CUDA (greedy and beam search, batch 1 and 16).
stage generate 60 python benchmarks/bench_generate.py --device cuda --repeats 3 \
  --out "$OUT/generate.json"
# 5. The whole default suite; the device-parametrised tests run on CUDA too.
stage pytest_all 90 python -m pytest -q -m "not slow" -rs -p no:cacheprovider

tail -n 3 "$OUT"/pytest_*.txt "$OUT"/train_*.txt "$OUT"/generate.txt 2>/dev/null
echo "results in $OUT (status $status)"
exit $status
