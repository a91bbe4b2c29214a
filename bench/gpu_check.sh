#!/usr/bin/env bash
# The GPU check: every CUDA path of the project, and the GPU figures of the README, on one lent GPU machine.
#
#   bash bench/gpu_check.sh STEP       STEP: tests | recipe | nanogpt | speed | profile
#
# Each step fits in one 10-minute device call and writes everything it measures under $OUT/STEP/ (logs, a JSON of
# figures, the TensorBoard run, a sample, the environment). Run the steps in this order, one call each:
#   tests    the CUDA tests (tests/test_cuda.py; junit XML + log), checkpoint write cost, sampling speed   ~3 min
#   recipe   configs/shakespeare_char.yaml end to end: time to val_loss <= 1.47, best val_loss, wall time,
#            peak memory, tokens/s and MFU from TensorBoard; a sample from its checkpoint                  ~3-5 min
#   nanogpt  nanoGPT's unchanged shakespeare_char recipe, same GPU, same corpus: wall time for 5000 iterations
#            and when its eval first shows val <= 1.47                                                     ~3-5 min
#   speed    bench/train_speed.py on the GPU recipe (Lightning vs. the bare loop, compile on both sides)   ~6-9 min
#   profile  a torch.profiler trace of 20 steps of the recipe (Chrome trace + kernel table)               ~2 min
#
# Prepared on the CPU machine, in the checkout (both folders are ignored by git, and travel with `carry`):
#   .whl/                  jsonargparse and its signatures extra as wheels (the GPU image lacks them):
#                          python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#                            --implementation cp --platform any -d .whl jsonargparse==4.53.0 docstring-parser typeshed-client
#   .anchors/nanoGPT/      an unchanged copy of ../shared/anchors/nanoGPT (for the nanogpt step only)
# and then, with the device tool: command "bash bench/gpu_check.sh tests", carry [".whl", ".anchors"].
#
# A dry run on a CPU checks the script before a lease is spent (a tiny recipe, a few nanoGPT iterations):
#   GPU_CHECK_DRY=1 OUT=/tmp/dry bash bench/gpu_check.sh recipe      (and the same for the other steps)
set -uo pipefail
cd "$(dirname "$0")/.."
STEP=${1:?usage: bash bench/gpu_check.sh tests|recipe|nanogpt|speed|profile}
OUT=${OUT:-/tmp/gpu_check}/$STEP
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
CORPUS=lit_gpt/corpus/tinyshakespeare.txt  # the packaged corpus, the recipes' default
RECIPE=configs/shakespeare_char.yaml DEVICE=cuda RECIPE_ARGS=() NANOGPT_ARGS=() SPEED_ARGS=(--steps 50 --repeats 2)
if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then  # CPU: the same steps, made small
  RECIPE=configs/debug.yaml DEVICE=cpu RECIPE_ARGS=(--trainer.max_steps 40 --trainer.val_check_interval 20)
  NANOGPT_ARGS=(--device=cpu --compile=False --eval_iters=2 --eval_interval=5 --max_iters=10 --n_layer=2 --n_head=2
                --n_embd=32 --block_size=32 --batch_size=4 --log_interval=1)
  SPEED_ARGS=(--steps 5 --repeats 1)
fi

# The project on the GPU image: the three missing wheels into a private folder, the project by PYTHONPATH.
if ! python3 -c "import jsonargparse, docstring_parser, typeshed_client" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 2
fi
export PYTHONPATH=/tmp/site:$PWD:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"; git log -1 --format="commit %H" 2>/dev/null; nvidia-smi
  python3 -c "import torch, lightning; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning',
lightning.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
} > "$OUT/env.txt" 2>&1

run() {  # run "name" command...: the command's output to $OUT/name.log, its wall time and status to $OUT/name.time
  local name=$1; shift
  local start=$(date +%s%N)
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "rc=$rc ms=$(( ($(date +%s%N) - start) / 1000000 )) start=$(( start / 1000000 )) command=$*" > "$OUT/$name.time"
  echo "$name: rc=$rc ($(tail -1 "$OUT/$name.log" | cut -c1-200))"
}

case $STEP in
tests)
  run pytest python3 -m pytest -v -rA -p no:cacheprovider tests/test_cuda.py --junitxml="$OUT/junit.xml"
  run checkpoint_speed python3 bench/checkpoint_speed.py --config $RECIPE --steps 60 --saves 5
  run sample_speed python3 bench/sample_speed.py --device $DEVICE --repeats 3
  ;;
recipe)
  run fit python3 train.py fit --config $RECIPE "${RECIPE_ARGS[@]}" --trainer.enable_progress_bar false \
    --trainer.logger.init_args.save_dir "$OUT/runs" --trainer.logger.init_args.name recipe \
    "--trainer.callbacks+={\"class_path\": \"timeline.Timeline\", \"init_args\": {\"path\": \"$OUT/timeline.json\", \"target\": 1.47}}"
  CKPT=$OUT/runs/recipe/checkpoints/last.ckpt
  run sample python3 sample.py --checkpoint "$CKPT" --prompt "ROMEO:" --max_new_tokens 500 --temperature 0.8 \
    --top_k 200 --seed 1337
  run sample_load python3 bench/sample_speed.py --device $DEVICE --repeats 1 --long 10 --checkpoint "$CKPT"
  python3 bench/gpu_summary.py recipe "$OUT" > "$OUT/figures.json"
  cat "$OUT/figures.json"
  rm -f "$OUT"/runs/recipe/checkpoints/*.ckpt  # 129 MB each: too big to bring back
  ;;
nanogpt)
  [ -d .anchors/nanoGPT ] || { echo "error: .anchors/nanoGPT is missing: copy ../shared/anchors/nanoGPT there" >&2; exit 2; }
  rm -rf /tmp/nanogpt && cp -r .anchors/nanoGPT /tmp/nanogpt && cp "$CORPUS" /tmp/nanogpt/data/shakespeare_char/input.txt
  # prepare.py imports requests only to download a corpus that is already there; the image may not have it.
  python3 -c "import requests" 2>/dev/null || { mkdir -p /tmp/stub && echo "" > /tmp/stub/requests.py; }
  (cd /tmp/nanogpt && PYTHONPATH=/tmp/stub python3 data/shakespeare_char/prepare.py) > "$OUT/prepare.log" 2>&1
  # Every output line is stamped with the seconds since the process started (nanoGPT prints no times of its own).
  start=$(date +%s.%N)
  (cd /tmp/nanogpt && python3 -u train.py config/train_shakespeare_char.py "${NANOGPT_ARGS[@]}" 2>&1) | python3 -u -c "
import sys, time
t0 = float(sys.argv[1])
for line in sys.stdin:
    print(f'{time.time() - t0:9.3f} {line}', end='', flush=True)" "$start" > "$OUT/train.log"
  echo "rc=${PIPESTATUS[0]}" > "$OUT/train.time"
  python3 bench/gpu_summary.py nanogpt "$OUT" > "$OUT/figures.json"
  cat "$OUT/figures.json"
  ;;
speed)
  run train_speed timeout 560 python3 bench/train_speed.py --config $RECIPE "${SPEED_ARGS[@]}"
  cat "$OUT/train_speed.log" | tail -6
  ;;
profile)
  run profile python3 bench/profile_steps.py --config $RECIPE --out "$OUT" $([ "$DEVICE" = cpu ] && echo --skip 3 --steps 3)
  tail -40 "$OUT/profile.log"
  ;;
*)
  echo "error: unknown step $STEP (tests, recipe, nanogpt, speed or profile)" >&2; exit 2 ;;
esac
