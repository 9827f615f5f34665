#!/usr/bin/env bash
# The GPU check: run the test suite with the CuPy backend available and the
# training / generation benchmarks against PyTorch CUDA, writing everything
# (logs, and the benchmarks' JSON: train_*.json, generate.json) to a results
# folder. Installs nothing from the network: the machine must have numpy,
# cupy, torch (CUDA), transformers, tokenizers, safetensors, tqdm, pytest and
# hypothesis already.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default: benchmarks/results/gpu)
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
# 1. The whole default suite; the device-parametrised tests now run on CUDA too.
python -m pytest -q -m "not slow" -rs -p no:cacheprovider > "$OUT/pytest_all.txt" 2>&1 || status=1
# 2. The GPU-marked tests alone, verbosely (these must pass, not skip).
python -m pytest -v -m gpu -rs -p no:cacheprovider > "$OUT/pytest_gpu.txt" 2>&1 || status=1
grep -q "skipped" "$OUT/pytest_gpu.txt" && grep -q "needs CuPy" "$OUT/pytest_gpu.txt" && status=1

# 3. Training step vs PyTorch CUDA eager: the reference config, then one 4x wider
#    and 4x larger in batch that occupies the GPU.
python benchmarks/bench_train.py --device cuda --repeats 3 --steps 5 \
  --out "$OUT/train_reference.json" > "$OUT/train_reference.txt" 2>&1 || status=1
python benchmarks/bench_train.py --device cuda --repeats 3 --steps 5 --config-scale 4 \
  --out "$OUT/train_large.json" > "$OUT/train_large.txt" 2>&1 || status=1
#    Dropout masks are drawn on the host (one random stream for both backends),
#    which may bound the GPU step: the large config again without dropout.
python benchmarks/bench_train.py --device cuda --repeats 3 --steps 5 --config-scale 4 --dropout 0 \
  --out "$OUT/train_large_nodropout.json" > "$OUT/train_large_nodropout.txt" 2>&1 || status=1
# 4. Generation vs transformers' generate on torch CUDA (greedy and beam search, batch 1 and 16).
python benchmarks/bench_generate.py --device cuda --out "$OUT/generate.json" \
  > "$OUT/generate.txt" 2>&1 || status=1

tail -n 3 "$OUT"/pytest_*.txt "$OUT"/train_*.txt "$OUT"/generate.txt 2>/dev/null
echo "results in $OUT (status $status)"
exit $status
