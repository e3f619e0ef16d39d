#!/usr/bin/env bash
# The GPU checks of issue 22 (item 4) in one script, within 8 minutes, nothing downloaded.
#
#   bash benchmarks/device_check.sh                 # on a GPU machine; results under $OUT (default runs/device_check)
#   bash benchmarks/device_check.sh --cpu-dry-run   # the same steps on the CPU at tiny sizes (checks the script)
#
# Steps (each under `timeout`, each writing JSON under $OUT; a step that fails or times out is
# recorded in $OUT/steps.txt and the next one still runs):
#   1. GLASS-m throughput, paper architecture (WRN-50 layer2+3, 288 px, random weights), batch 8
#      and larger batches (the best reported), fp32 / features / bf16+channels-last+features / +bf16_heads /
#      +compile / +CUDA graphs
#   2. PatchCore throughput, paper architecture (WRN-50, 224 px, random bank of the paper's size), the same paths
#   3. one GLASS epoch of the paper profile (test-set selection off) on a built-in category generated at
#      288 px (32 images), fp32 vs bf16+channels-last+features vs + bf16_ascent (normal features cached)
#   4. the rehearsal of the paper profile on cuda: `adlib reproduce --profile paper --rehearsal --only glass`
#      (no --device option there: the paper profile's device "auto" is cuda on a GPU machine), limited
#      to the time left; its log is kept
# Budget (seconds): 150 + 90 + 120 + the rest of 480.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
OUT=${OUT:-runs/device_check}
mkdir -p "$OUT"
DEVICE=cuda
TINY=()
BUDGET=480
T1=150 T2=90 T3=120
if [ "${1:-}" = "--cpu-dry-run" ]; then
    DEVICE=cpu
    TINY=(--tiny)
    export ADLIB_NUMERICS=native
    BUDGET=240 T1=60 T2=40 T3=60
fi
START=$(date +%s)
: > "$OUT/steps.txt"

step() {  # step NAME SECONDS COMMAND...
    local name=$1 secs=$2
    shift 2
    local t0=$(date +%s)
    timeout --kill-after=10 "$secs" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc seconds=$(( $(date +%s) - t0 ))" | tee -a "$OUT/steps.txt"
}

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "device: $DEVICE"
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} > "$OUT/environment.txt" 2>&1

step throughput-glass "$T1" "$PY" benchmarks/device_check.py throughput --method glass --device "$DEVICE" \
    --out "$OUT" --budget $(( T1 - 40 )) "${TINY[@]}"
step throughput-patchcore "$T2" "$PY" benchmarks/device_check.py throughput --method patchcore --device "$DEVICE" \
    --out "$OUT" --budget $(( T2 - 30 )) --no-compile "${TINY[@]}"
step epoch-glass "$T3" "$PY" benchmarks/device_check.py epoch --device "$DEVICE" --out "$OUT" "${TINY[@]}"

LEFT=$(( BUDGET - ($(date +%s) - START) - 5 ))
if [ "$DEVICE" = cuda ] && [ "$LEFT" -gt 30 ]; then
    # `adlib reproduce --rehearsal` takes no --device (nor --out): the paper profile's device is "auto",
    # i.e. cuda when one is available; it writes under runs/rehearsal (its own store). --jobs 1: one
    # process on the GPU. Its log is $OUT/rehearsal.log; the executed notebooks stay in runs/rehearsal.
    step rehearsal "$LEFT" "$PY" -m adlib.cli reproduce --profile paper --rehearsal --only glass --jobs 1
elif [ "$DEVICE" = cpu ]; then
    echo "rehearsal skipped (CPU dry run: the rehearsal needs cuda here)" | tee -a "$OUT/steps.txt"
else
    echo "rehearsal skipped (${LEFT}s left)" | tee -a "$OUT/steps.txt"
fi
echo "total $(( $(date +%s) - START ))s; results in $OUT" | tee -a "$OUT/steps.txt"
