#!/usr/bin/env bash
# One prepared GPU fine-tuning of srresnet_x4, sized to a fixed time budget (issue 6; benchmarks/TRAINING.md).
#
# Two fine-tunes of the shipped generator with different seeds run side by side on one GPU (one small
# SRResNet does not fill a Hopper card), so their weight average is a candidate too. A short probe of the
# same two runs measures steps/s first; the step count N then fills SECONDS, and the learning rate
# (LR, 2e-4) is halved at 40/60/75/85/93 % of N, so the schedule ends inside the budget.
#
# usage: benchmarks/gpu_train_srresnet.sh DATA_ROOT RUNS_DIR [SECONDS]
#   DATA_ROOT holds T91/, BSD200/, BSDS500_test200/ (../shared/data layout); RUNS_DIR gets runs a/ and b/.
#   env: PYTHON (python3), INIT (models/srresnet_x4.onnx), LR (2e-4), HR_PATCH (192), BATCH (32),
#   WORKERS (6 per run), PROBE (400),
#   EXTRA (more train options, last wins: a CPU dry run uses EXTRA="--set batch=2 --set hr_patch=48").
set -euo pipefail
DATA=$1; RUNS=$2; SECONDS_BUDGET=${3:-400}
PY=${PYTHON:-python3}
INIT=${INIT:-models/srresnet_x4.onnx}
WORKERS=${WORKERS:-6}
PROBE=${PROBE:-400}
LR=${LR:-2e-4}
HR_PATCH=${HR_PATCH:-192}
BATCH=${BATCH:-32}
mkdir -p "$RUNS"
declare -A SEED=([a]=11 [b]=12)
common=(--preset psnr --init "$INIT" --data "$DATA/T91" --data "$DATA/BSD200" --data "$DATA/BSDS500_test200"
        --set hr_patch="$HR_PATCH" --set batch="$BATCH" --set lr_g="$LR" --set lr_gamma=0.5 --set workers="$WORKERS"
        --set log_every=50 ${EXTRA:-})

echo "== $(date -u +%FT%TZ) probe: 2 x $PROBE steps"
for s in a b; do
  "$PY" cli.py train "${common[@]}" --steps "$PROBE" --out "$RUNS/probe_$s" --set checkpoint_every=100000 \
    --set seed="${SEED[$s]}" > "$RUNS/probe_$s.log" 2>&1 &
done
wait
# steps/s of each run after its first 150 steps (cuDNN autotuning and worker start excluded); the slower one counts
RATE=$("$PY" - "$RUNS" <<'EOF'
import csv, statistics, sys
rates = []
for s in "ab":
    rows = [r for r in csv.DictReader(open(f"{sys.argv[1]}/probe_{s}/losses.csv")) if int(r["step"]) > 150]
    rates.append(statistics.median(float(r["steps_per_s"]) for r in rows))
print(min(rates))
EOF
)
read -r N MILESTONES EVERY < <("$PY" -c "
n = int($RATE * $SECONDS_BUDGET) // 100 * 100
print(n, ','.join(str(int(n * f)) for f in (0.4, 0.6, 0.75, 0.85, 0.93)), max(100, n // 8))")
[ "$N" -ge 100 ] || { echo "probe rate $RATE steps/s leaves under 100 steps in $SECONDS_BUDGET s" >&2; exit 1; }
echo "== $(date -u +%FT%TZ) $RATE steps/s per run side by side -> N=$N, lr halved at $MILESTONES, checkpoint every $EVERY"

for s in a b; do
  timeout -s INT $((SECONDS_BUDGET + 120)) "$PY" cli.py train "${common[@]}" --steps "$N" --out "$RUNS/$s" \
    --set lr_milestones="$MILESTONES" --set checkpoint_every="$EVERY" \
    --set seed="${SEED[$s]}" > "$RUNS/$s.log" 2>&1 &
done
wait || true
echo "== $(date -u +%FT%TZ) done"
for s in a b; do tail -n 2 "$RUNS/$s/losses.csv"; tail -n 3 "$RUNS/$s.log"; done
