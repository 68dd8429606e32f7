#!/usr/bin/env bash
# The device check of issue 7, run from the repository root on the lent GPU machine:
#
#   bash tools/gpu_check.sh                       # the GPU machine (carry .whl and .gpu_data)
#   bash tools/gpu_check.sh --device cpu --quick  # a dry run of every step on a CPU machine
#   bash tools/gpu_check.sh --short               # tighter limits (210 s at most) for a small lease
#
# 1. installs what the machine lacks (lark, graphviz; nvidia-cudnn-frontend and
#    nvidia-cudnn-cu12 for the convolutions; mpi4py and mpich for the NCCL test) from the
#    wheels in .whl/;
# 2. runs the backend parity tests (every op's outputs and gradients on the GPU vs NumPy,
#    inferred vs executed shapes, generated fused kernels, the hand-written CUDA loops of
#    runtime/cuda_loops.py bit for bit where they should be) and the fusion tests;
# 3. runs tools/bench.py on the device at batch 64 and 256 next to PyTorch on the same device
#    (steps replayed as CUDA graphs), then the CNNs at batch 256 without fusion (what fusion
#    buys, in time and kernel launches), every workload without CUDA graphs (--no-graph),
#    then a per-kernel profile of the CNNs at batch 256 (where a step's time goes);
# 4. trains one epoch of specs/mnist.net on the device and measures its test accuracy
#    (MNIST from .gpu_data/mnist, gzipped idx files copied from the netlang cache);
# 5. writes $OUT/report.md with the results and one log per step (9 files in $OUT).
#
# Each step has its own time limit (585 s together at most; about four minutes expected).
# Prepare here (once): .whl/ (pip download, see /work/.library/device/README.md; the device
# image has CuPy and cuDNN's libraries but not the frontend's Python module, an 11.6 MB wheel:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 -d .whl nvidia-cudnn-frontend==1.32.0)
# and
#   mkdir -p .gpu_data/mnist; for f in ~/.cache/netlang/mnist/*-ubyte; do
#     gzip -9 -c "$f" > .gpu_data/mnist/$(basename "$f").gz; done
set -u -o pipefail
cd "$(dirname "$0")/.."

DEVICE=gpu
QUICK=0
SHORT=0   # --short: the same steps with tighter limits (210 s at most), for a small lease
T_PARITY=150; T_BENCH=140; T_NOFUSION=30; T_NOGRAPH=40; T_PROFILE=40; T_TRAIN=140; T_EVAL=45
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --short) SHORT=1; T_PARITY=45; T_BENCH=75; T_NOFUSION=0; T_NOGRAPH=0; T_PROFILE=30
             T_TRAIN=45; T_EVAL=15
             shift ;;
    *) echo "usage: tools/gpu_check.sh [--device gpu|cpu] [--quick] [--short]" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
START=$(date +%s)
REPORT="$OUT/report.md"
: > "$REPORT"    # a fresh report, even in a reused $OUT
say() { echo "$@" | tee -a "$REPORT"; }
elapsed() { echo $(( $(date +%s) - START ))s; }
status() { if [ "$1" -eq 0 ]; then echo ok; elif [ "$1" -eq 124 ]; then echo "TIMED OUT"; else echo "FAILED (exit $1)"; fi; }

# -- 1. environment ----------------------------------------------------------------------------
if ! python3 -c "import lark, graphviz, cudnn" 2>/dev/null; then
  if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/netlang_site .whl/*.whl || { echo "cannot install .whl/*.whl" >&2; exit 1; }
    export PYTHONPATH="/tmp/netlang_site${PYTHONPATH:+:$PYTHONPATH}"
  else    # a CPU dry run: put the venv's python first on PATH (lark, numba; cudnn may lack)
    echo "note: lark, graphviz or cudnn missing and no .whl/ to install them from" >&2
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NETLANG_DATA="$PWD/.gpu_data"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  python3 - <<'EOF'
import platform, numpy
print("python", platform.python_version(), "numpy", numpy.__version__)
for name in ("cupy", "cudnn", "torch", "lark", "networkx", "hypothesis"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as err:
        print(name, "missing:", err)
from netlang.runtime.backend import get_backend, gpu_available
print("netlang --device gpu:", gpu_available())
if gpu_available()[0]:
    print("netlang gpu backend:", get_backend("gpu").describe())
EOF
} > "$OUT/env.log" 2>&1
say "# netlang GPU check ($DEVICE$([ $QUICK = 1 ] && echo ', quick'))"
say ""
say '```'
cat "$OUT/env.log" | tee -a "$REPORT"
say '```'

# -- 2. parity tests ---------------------------------------------------------------------------
# tests/train/test_nccl.py: GPU ranks' gradient sums through NCCL (needs mpi4py and the mpich
# wheel in .whl/ too; without them it skips, and the report's SKIPPED lines say so)
timeout $T_PARITY python3 -m pytest -q -rs -o addopts= -p no:cacheprovider tests/runtime/test_backend.py \
  tests/runtime/test_gpu_halves.py tests/runtime/test_cudnn.py tests/runtime/test_capture.py \
  tests/runtime/test_gpu_draws.py tests/runtime/test_cuda_loops.py \
  tests/runtime/test_cuda_updates.py tests/passes/test_fusion.py \
  tests/train/test_nccl.py \
  > "$OUT/parity.log" 2>&1
rc=$?
say ""
say "## parity tests: $(status $rc) ($(elapsed))"
say '```'
grep -E "^(FAILED|ERROR)" "$OUT/parity.log" | head -20 | tee -a "$REPORT"
grep -E "^SKIPPED" "$OUT/parity.log" | head -5 | tee -a "$REPORT"
tail -1 "$OUT/parity.log" | tee -a "$REPORT"
say '```'

# -- 3. benchmark ------------------------------------------------------------------------------
BATCHES=(64 256); BIG=256; STEPS=(--steps 20 --warmup 5); COMPILES=3
if [ $QUICK = 1 ]; then BATCHES=(8 16); BIG=16; STEPS=(--steps 2 --warmup 1); COMPILES=1; fi
if [ $SHORT = 1 ]; then STEPS=(--steps 5 --warmup 2); COMPILES=1; fi
# bench_section LIMIT LOG TITLE FROM -- ARGS...: run tools/bench.py with ARGS under LIMIT seconds
# into $OUT/LOG, and put its output from the first line matching FROM into the report.
bench_section() {
  local limit=$1 log="$OUT/$2" title=$3 from=$4; shift 5
  timeout "$limit" python3 tools/bench.py --device "$DEVICE" "$@" > "$log" 2>&1
  local rc=$?
  say ""
  say "## $title: $(status $rc) ($(elapsed))"
  say '```'
  sed -n "/$from/,\$p" "$log" | tee -a "$REPORT"
  [ $rc -ne 0 ] && tail -15 "$log" | tee -a "$REPORT"
  say '```'
}

bench_section $T_BENCH bench.log "benchmark, $DEVICE, netlang vs PyTorch" "^training throughput" -- \
  --batch "${BATCHES[@]}" "${STEPS[@]}" --compile-runs $COMPILES --json "$OUT/bench.json"
if [ $T_NOFUSION -gt 0 ]; then
  bench_section $T_NOFUSION bench_nofusion.log "the same CNNs at batch $BIG without fusion" \
    "^training throughput" -- --batch $BIG --workloads mnist residual --no-torch --no-fusion \
    --compile-runs 0 "${STEPS[@]}"
fi
if [ $T_NOGRAPH -gt 0 ]; then      # what replaying steps as CUDA graphs buys (runtime/capture.py)
  bench_section $T_NOGRAPH bench_nograph.log "every workload at batch 64 and $BIG without CUDA graphs" \
    "^training throughput" -- --batch 64 $BIG --no-torch --no-graph --compile-runs 0 "${STEPS[@]}"
fi
if [ $T_PROFILE -gt 0 ]; then
  bench_section $T_PROFILE profile.log \
    "where a step's time goes at batch $BIG (each kernel timed to completion)" "kernels take" -- \
    --batch $BIG --workloads residual mnist_small --no-torch --compile-runs 0 --steps 3 \
    --warmup 2 --profile 12
fi

# -- 4. one epoch of specs/mnist.net -----------------------------------------------------------
RUN=/tmp/netlang_gpu_run
rm -rf "$RUN"
LIMIT=(); [ $QUICK = 1 ] && LIMIT=(--limit 2000)
{
  timeout $T_TRAIN python3 -m netlang train specs/mnist.net --device "$DEVICE" --epochs 1 \
    --out "$RUN" "${LIMIT[@]}" && \
  timeout $T_EVAL python3 -m netlang eval specs/mnist.net --checkpoint "$RUN/last.ckpt" \
    --device "$DEVICE"
} > "$OUT/train.log" 2>&1
rc=$?
say ""
say "## one epoch of specs/mnist.net on $DEVICE, then the test split: $(status $rc) ($(elapsed))"
say '```'
grep -vE "^\s*$" "$OUT/train.log" | tail -8 | tee -a "$REPORT"
say '```'
say ""
say "total $(elapsed); logs: env.log parity.log bench.log bench.json bench_nofusion.log bench_nograph.log profile.log train.log"
