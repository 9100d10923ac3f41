#!/usr/bin/env bash
# One prepared GPU training call for a shipped fast generator, sized to a fixed time budget (issue "fast
# generator", point 5; benchmarks/TRAINING.md). ../shared does not travel: everything comes from SHARD
# (benchmarks/make_train_shard.py) and the checkout.
#
#   PHASE psnr: fast_psnr_x4 (SPAN), the L1 phase continued as a warm restart: --preset fast-psnr
#               --init models/fast_psnr_x4.onnx (its EMA weights, a fresh Adam), lr LR (5e-4), batch 64.
#   PHASE gan:  fast_x4 (span-nearest), the perceptual phase continued as it was last trained: --preset fast
#               --init models/fast_x4.onnx, a fresh discriminator, adversarial weight ADV (0.02), lattice 2000,
#               LDL's artefact term 300, lr LR (1e-4), batch 16, content loss from SHARD/vgg16_int8.safetensors
#               (VGG-16 does not fit a device call in fp16; int8 with a scale per output channel,
#               trainer.pretrained.quantize_int8, moves the content loss by 0.4 % on real crops;
#               benchmarks/TRAINING.md, ninth session).
#   PHASE real: real_x4 (issue 16), its perceptual phase continued as it was last trained: --preset real
#               --degradation real-first (a fifth of the samples clean, 64 % first-order), lattice
#               4000, lowfreq 100, --init models/real_x4.onnx, a fresh discriminator, ADV (0.02), lr LR
#               (5e-5), batch 16, the same int8 VGG; the LR is degraded per sample on the CPU workers
#               (trainer.degradations), so WORKERS matters more here. Set5 in val.csv is clean LR (a
#               sanity line); choose on degraded Set5 here afterwards (benchmarks/make_degraded_bench.py,
#               cli.py eval).
#   Both perceptual phases add the LPIPS-VGG term at LPIPS (20), as both shipped models were last trained (its
#   heads come from the lpips package, on the int8 trunk).
#
# A short probe (a throw-away run) measures steps/s first; the run then gets N = steps/s x SECONDS steps,
# the learning rate halved at 40/60/75/85/93 % of them, so the schedule ends inside the budget. Set5
# (SHARD/val/Set5, validation only) is scored with the EMA weights at each checkpoint.
#
# usage: benchmarks/gpu_train_fast.sh PHASE SHARD RUNS_DIR [SECONDS]
#   SHARD holds train/ and val/Set5/ (and, for gan, vgg16_int8.safetensors); RUNS_DIR gets PHASE/, probe/, logs.
#   env: PYTHON (python3), LR, BATCH, ADV (0.02), LPIPS (20), WORKERS (6), PROBE (300),
#   COPY_TO (a folder, e.g. $OUT: gets generator.pt, checkpoint.pt, config.json, losses.csv, val.csv and both
#   logs, flat), EXTRA (more train options, last wins: a CPU dry run uses
#   EXTRA="--set batch=2 --set hr_patch=64 --set workers=0 --set log_every=1 --threads 1", PROBE=6, SECONDS 8).
# On an H200 (10 min a command, ~12 min of device time in all): make the shard here first
#   python benchmarks/make_train_shard.py --vgg ../shared/weights/vgg16_features_imagenet_torchvision.safetensors
# (the crops fill what is left of the 64 MiB beside the checkout and the 14 MiB VGG file), then one run call with
# carry ["shard"], timeout_s 590 and the command
#   PYTHONUNBUFFERED=1 COPY_TO=$OUT benchmarks/gpu_train_fast.sh gan shard /tmp/runs 400 2>&1 | tee $OUT/gpu.log
# (SECONDS 400 leaves ~2 min of the command for start-up, the probe, validation and the SIGINT margin).
set -euo pipefail
PHASE=$1; SHARD=$2; RUNS=$3; SECONDS_BUDGET=${4:-400}
PY=${PYTHON:-python3}
WORKERS=${WORKERS:-6}
PROBE=${PROBE:-300}
perceptual=(--set lpips="${LPIPS:-20}" --vgg-weights "$SHARD/vgg16_int8.safetensors")
case "$PHASE" in
  psnr) phase=(--preset fast-psnr --init models/fast_psnr_x4.onnx --set batch="${BATCH:-64}" --set lr_g="${LR:-5e-4}") ;;
  gan) phase=(--preset fast --set arch=span-nearest --init models/fast_x4.onnx --set batch="${BATCH:-16}"
              --set lr_g="${LR:-1e-4}" --set adv="${ADV:-0.02}" --set lattice=2000 --set artifact=300
              "${perceptual[@]}") ;;
  real) phase=(--preset real --degradation real-first --init models/real_x4.onnx --set batch="${BATCH:-16}"
               --set lr_g="${LR:-5e-5}" --set adv="${ADV:-0.02}" --set lattice=4000 --set lowfreq=100
               "${perceptual[@]}") ;;
  *) echo "PHASE must be psnr, gan or real, not '$PHASE'" >&2; exit 2 ;;
esac
[ "$PHASE" = psnr ] || [ -f "$SHARD/vgg16_int8.safetensors" ] || {  # the perceptual phases need the content loss
  echo "$SHARD has no vgg16_int8.safetensors: make the shard with --vgg (see the header)" >&2; exit 1; }
[ -d "$SHARD/train" ] && [ -d "$SHARD/val/Set5" ] || { echo "$SHARD has no train/ and val/Set5/: make it with benchmarks/make_train_shard.py" >&2; exit 1; }
mkdir -p "$RUNS"
if ! "$PY" -c "import srgan" 2>/dev/null; then  # not installed (a bare GPU machine): the repository root is the package
  mkdir -p "$RUNS/pkg" && ln -sfn "$PWD" "$RUNS/pkg/srgan"
  export PYTHONPATH="$RUNS/pkg${PYTHONPATH:+:$PYTHONPATH}"
fi
common=("${phase[@]}" --data "$SHARD/train" --cache "$RUNS/pair_cache" --set workers="$WORKERS" --set log_every=50)

echo "== $(date -u +%FT%TZ) $PHASE probe: $PROBE steps"
rm -rf "$RUNS/probe"
timeout 240 "$PY" cli.py train "${common[@]}" -o "$RUNS/probe" --steps "$PROBE" --set checkpoint_every=1000000 \
  ${EXTRA:-} > "$RUNS/probe.log" 2>&1 || { tail -n 20 "$RUNS/probe.log" >&2; exit 1; }
# steps/s after the probe's first third (cuDNN autotuning and worker start excluded)
RATE=$("$PY" - "$RUNS/probe/losses.csv" $((PROBE / 3)) <<'EOF'
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if int(r["step"]) > int(sys.argv[2])]
print(statistics.median(float(r["steps_per_s"]) for r in rows))
EOF
)
read -r N MILESTONES EVERY < <("$PY" -c "
n = int($RATE * $SECONDS_BUDGET) // 10 * 10
print(n, ','.join(str(int(n * f)) for f in (0.4, 0.6, 0.75, 0.85, 0.93)), max(10, n // 8))")
[ "$N" -ge 10 ] || { echo "probe rate $RATE steps/s leaves under 10 steps in $SECONDS_BUDGET s" >&2; exit 1; }
echo "== $(date -u +%FT%TZ) $RATE steps/s -> $N steps, lr halved at $MILESTONES, checkpoint every $EVERY"

rm -rf "${RUNS:?}/$PHASE"
timeout -s INT $((SECONDS_BUDGET + 60)) "$PY" cli.py train "${common[@]}" -o "$RUNS/$PHASE" --steps "$N" \
  --set lr_milestones="$MILESTONES" --set checkpoint_every="$EVERY" --val "$SHARD/val/Set5" \
  ${EXTRA:-} > "$RUNS/$PHASE.log" 2>&1 || echo "== train exited $? (124: stopped by the timeout with SIGINT, checkpointed first)"
echo "== $(date -u +%FT%TZ) done"
tail -n 2 "$RUNS/$PHASE/losses.csv"; tail -n 4 "$RUNS/$PHASE/val.csv"; tail -n 3 "$RUNS/$PHASE.log"
if [ -n "${COPY_TO:-}" ]; then
  mkdir -p "$COPY_TO"
  cp "$RUNS/$PHASE"/{generator.pt,checkpoint.pt,config.json,losses.csv,val.csv} "$RUNS"/{probe,$PHASE}.log "$COPY_TO"/
fi
