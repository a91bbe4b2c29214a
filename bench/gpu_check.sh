#!/usr/bin/env bash
# The GPU figures and the CUDA tests, on a CUDA machine, one step per call; each writes its logs under $OUT/STEP/.
#   bash bench/gpu_check.sh tests    the CUDA tests (junit XML) and sampling speed
#   bash bench/gpu_check.sh ttq      the GPU recipe against nanoGPT's: time to val_loss <= 1.47, best val_loss, memory
#   bash bench/gpu_check.sh speed    time per step against nanoGPT's, and the checkpoint write cost
#   bash bench/gpu_check.sh rope     the GPU recipe with rotary positions: best val_loss (target 1.42), time to 1.47
# NANOGPT_DIR: nanoGPT (default ../shared/anchors/nanoGPT). GPU_CHECK_DRY=1: each step small, on a CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
STEP=${1:?usage: bash bench/gpu_check.sh tests|ttq|speed|rope}
OUT=${OUT:-/tmp/gpu_check}/$STEP && mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
RECIPE=configs/shakespeare_char.yaml ROPE=configs/shakespeare_char_rope.yaml DEVICE=cuda TARGET=1.47 SMALL=() NANOGPT=""
if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then
  RECIPE=configs/debug.yaml ROPE=configs/debug.yaml DEVICE=cpu TARGET=9 SMALL=(--trainer.max_steps 20)
  NANOGPT="--max_iters=10 --lr_decay_iters=10 --eval_interval=5 --eval_iters=2 --n_layer=2 --n_head=2 --n_embd=32"
fi
python3 -c "import jsonargparse" 2>/dev/null ||  # a bare machine: the wheels carried in .whl/
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH=/tmp/site:$PWD:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}
{ date -u +%FT%TZ; git log -1 --format="commit %H" 2>/dev/null; nvidia-smi 2>/dev/null; } > "$OUT/env.txt"

run() {  # run NAME COMMAND...: its output to $OUT/NAME.log, its status on stdout
  local name=$1; shift
  "$@" > "$OUT/$name.log" 2>&1
  echo "$name: rc=$? ($(tail -1 "$OUT/$name.log" | cut -c1-200))"
}

case $STEP in
tests) run pytest python3 -m pytest -q -rA -m "slow or not slow" tests/test_cuda.py --junitxml="$OUT/junit.xml"
       run sample_speed python3 bench/sample_speed.py --device $DEVICE --repeats 3 ;;
ttq)   run ttq python3 bench/time_to_quality.py --config $RECIPE --repeats 1 --target $TARGET \
         --nanogpt "$NANOGPT" "${SMALL[@]}" ;;
speed) run train_speed timeout 560 python3 bench/train_speed.py --config $RECIPE --steps 50 --repeats 2 --saves 5 ;;
rope)  run rope python3 bench/time_to_quality.py --config $ROPE --repeats 1 --target $TARGET --nanogpt "$NANOGPT" \
         "${SMALL[@]}" ;;
*)     echo "error: unknown step $STEP (tests, ttq, speed or rope)" >&2; exit 2 ;;
esac
