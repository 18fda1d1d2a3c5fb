#!/usr/bin/env bash
# The benchmark set on a GPU, in under 5 minutes: the same table, with absolute times.
#   bash benchmarks/gpu.sh [python]        (repository root; default python3)
# Uses the machine's own jax (with CUDA); bea goes on PYTHONPATH, not installed. If the
# machine lacks bea's pure-Python dependencies (diffrax, equinox, optax, jaxtyping, ...),
# run `bash benchmarks/gpu.sh --vendor` here first and carry build/gpu_vendor: it is
# then used for whatever does not import there. torch/torchdiffeq and scikit-learn are
# optional: without them the rows that need them report the error and the rest still run.
set -u
if [ "${1:-}" = "--vendor" ]; then
  SP=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  mkdir -p build/gpu_vendor
  for m in diffrax equinox optax jaxtyping lineax optimistix wadler_lindig absl etils \
           opt_einsum typing_extensions.py chex toolz; do
    [ -e "$SP/$m" ] && cp -r "$SP/$m" build/gpu_vendor/
  done
  du -sh build/gpu_vendor; exit 0
fi
PY=${1:-python3}
export PYTHONPATH="$(pwd):${PYTHONPATH:-}"
if ! $PY -c "import diffrax, equinox, optax, jaxtyping" 2>/dev/null && [ -d build/gpu_vendor ]; then
  export PYTHONPATH="$PYTHONPATH:$(pwd)/build/gpu_vendor"
  echo "using build/gpu_vendor for missing pure-Python dependencies"
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-results/benchmarks_gpu}
mkdir -p "$OUT"
$PY -c "import jax; print('jax', jax.__version__, jax.devices())"
$PY -c "import torch, torchdiffeq; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  || echo "torch/torchdiffeq absent: benchmark 2 runs bea only"
# --quick: benchmark 1 at 8x fewer steps (its SciPy column alone takes ~8 min at full size
# on a 2-core CPU), benchmarks 2 and 3 on their first 3 and 2 step sizes. Each benchmark
# has its own time limit, so one slow column cannot eat the 5 minutes.
# Benchmarks 2 (mini-batch history, vmapped) and 3 (vmapped grid) are wide and run on the
# GPU. Benchmarks 1 and 4 verify a 2-parameter problem over 10^4 sequential intervals: on
# a GPU every interval is kernel-launch latency (measured on an H200: > 70 s where the
# host CPU needs ~10 s), so they run on the GPU host's CPU (JAX_PLATFORMS=cpu), labelled.
timeout 150 $PY -m benchmarks.run --quick --only 2 3 --timeout 70 --out "$OUT/gpu" 2>&1 \
  | tee "$OUT/log_gpu.txt"
JAX_PLATFORMS=cpu timeout 140 $PY -m benchmarks.run --quick --only 1 4 --timeout 65 \
  --out "$OUT/host_cpu" 2>&1 | tee "$OUT/log_host_cpu.txt"
