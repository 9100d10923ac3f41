#!/usr/bin/env bash
# One prepared GPU continuation of the SPAN fast_psnr run, sized to a fixed time budget (issue "fast
# generator", point 5; benchmarks/TRAINING.md).
#
# The run's full state (G, EMA, Adam, step 9,800 on 2026-12-02; the script reads it) is committed at checkpoints/fast_psnr_run/; it is
# copied to RUNS_DIR/fast_psnr and resumed (`cli.py train --resume --allow-changes`: the data, batch,
# step count and schedule differ from the saved ones and are recorded in its config.json history) on
# the shard that benchmarks/make_train_shard.py made, since ../shared/data does not travel. A short
# probe (a throw-away resume of a copy) measures steps/s first; the continuation then gets
# N = steps/s x SECONDS more steps, with the learning rate back at LR (a warm restart: the run ended
# at 1.6e-5) and halved at 40/60/75/85/93 % of them, so the schedule ends inside the budget.
# Set5 (SHARD/val/Set5, validation only) is scored with the EMA weights at each checkpoint.
#
# usage: benchmarks/gpu_train_fast.sh SHARD RUNS_DIR [SECONDS]
#   SHARD holds train/ (the crops trained on) and val/Set5/; RUNS_DIR gets fast_psnr/, probe/ and the logs.
#   env: PYTHON (python3), RUN (checkpoints/fast_psnr_run), LR (5e-4), BATCH (64), WORKERS (6), PROBE (300),
#   COPY_TO (a folder, e.g. $OUT: gets checkpoint.pt, config.json, losses.csv, val.csv and both logs, flat),
#   EXTRA (more train options, last wins: a CPU dry run uses
#   EXTRA="--set batch=2 --set hr_patch=64 --set workers=0 --set log_every=1 --threads 1", PROBE=6, SECONDS 8).
# On an H200 (10 min a command, ~12 min of device time in all): make the shard here first
# (`python benchmarks/make_train_shard.py`: what fits beside the checkout, ~4 MiB in 2026-12, into the git-ignored shard/), then one run call with
# carry ["shard"], timeout_s 590 and the command
#   PYTHONUNBUFFERED=1 COPY_TO=$OUT benchmarks/gpu_train_fast.sh shard /tmp/runs 400 2>&1 | tee $OUT/gpu_train_fast.log
# (SECONDS 400 leaves ~2 min of the command for start-up, the probe, validation and the SIGINT margin).
set -euo pipefail
SHARD=$1; RUNS=$2; SECONDS_BUDGET=${3:-400}
PY=${PYTHON:-python3}
RUN=${RUN:-checkpoints/fast_psnr_run}
LR=${LR:-5e-4}
BATCH=${BATCH:-64}
WORKERS=${WORKERS:-6}
PROBE=${PROBE:-300}
[ -d "$SHARD/train" ] && [ -d "$SHARD/val/Set5" ] || { echo "$SHARD has no train/ and val/Set5/: make it with benchmarks/make_train_shard.py" >&2; exit 1; }
mkdir -p "$RUNS"
if ! "$PY" -c "import srgan" 2>/dev/null; then  # not installed (a bare GPU machine): the repository root is the package
  mkdir -p "$RUNS/pkg" && ln -sfn "$PWD" "$RUNS/pkg/srgan"
  export PYTHONPATH="$RUNS/pkg${PYTHONPATH:+:$PYTHONPATH}"
fi
START=$("$PY" -c "from srgan.trainer.checkpoint import load_checkpoint; print(load_checkpoint('$RUN/checkpoint.pt')['step'])")
common=(--resume --allow-changes --data "$SHARD/train" --cache "$RUNS/pair_cache" --set batch="$BATCH"
        --set lr_g="$LR" --set workers="$WORKERS" --set log_every=50)

echo "== $(date -u +%FT%TZ) probe: $PROBE steps from step $START"
rm -rf "$RUNS/probe" && cp -r "$RUN" "$RUNS/probe"
timeout 240 "$PY" cli.py train "${common[@]}" -o "$RUNS/probe" --steps $((START + PROBE)) --set checkpoint_every=1000000 \
  ${EXTRA:-} > "$RUNS/probe.log" 2>&1 || { tail -n 20 "$RUNS/probe.log" >&2; exit 1; }
# steps/s after the probe's first third (cuDNN autotuning and worker start excluded)
RATE=$("$PY" - "$RUNS/probe/losses.csv" $((START + PROBE / 3)) <<'EOF'
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if int(r["step"]) > int(sys.argv[2])]
print(statistics.median(float(r["steps_per_s"]) for r in rows))
EOF
)
read -r N MILESTONES EVERY < <("$PY" -c "
more = int($RATE * $SECONDS_BUDGET) // 10 * 10
print($START + more, ','.join(str($START + int(more * f)) for f in (0.4, 0.6, 0.75, 0.85, 0.93)), max(10, more // 8))")
[ "$N" -ge $((START + 10)) ] || { echo "probe rate $RATE steps/s leaves under 10 steps in $SECONDS_BUDGET s" >&2; exit 1; }
echo "== $(date -u +%FT%TZ) $RATE steps/s -> steps $START..$N, lr $LR halved at $MILESTONES, checkpoint every $EVERY"

rm -rf "$RUNS/fast_psnr" && cp -r "$RUN" "$RUNS/fast_psnr"
timeout -s INT $((SECONDS_BUDGET + 60)) "$PY" cli.py train "${common[@]}" -o "$RUNS/fast_psnr" --steps "$N" \
  --set lr_milestones="$MILESTONES" --set checkpoint_every="$EVERY" --val "$SHARD/val/Set5" \
  ${EXTRA:-} > "$RUNS/fast_psnr.log" 2>&1 || echo "== train exited $? (124: stopped by the timeout with SIGINT, checkpointed first)"
echo "== $(date -u +%FT%TZ) done"
tail -n 2 "$RUNS/fast_psnr/losses.csv"; tail -n 4 "$RUNS/fast_psnr/val.csv"; tail -n 3 "$RUNS/fast_psnr.log"
if [ -n "${COPY_TO:-}" ]; then
  mkdir -p "$COPY_TO"
  cp "$RUNS"/fast_psnr/{checkpoint.pt,config.json,losses.csv,val.csv} "$RUNS"/{probe,fast_psnr}.log "$COPY_TO"/
fi
