#!/usr/bin/env bash
# Reproduces "bench latency" in benchmarks/RESULTS.md: ms per tile, output MP/s, peak RSS and the fraction of
# the fp32 matmul peak (measured in the same run) for tile sizes 64 / 128 / whole x 1 and 2 threads on CPU.
# MODEL defaults to models/srresnet_x4.onnx (any SRResNet-16 x4 export: speed does not depend on the weights).
# The LR test image is 256x256, so tile 256 would be the whole image. Needs pip install -e '.[bench]'.
# About 12 minutes on 2 shared cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MODEL=${MODEL:-models/srresnet_x4.onnx}
"$PY" cli.py bench latency -m "$MODEL" --device cpu --size 256 --tile-size 64 --tile-size 128 --tile-size 0 \
    --threads 1 --threads 2 --runs 3 --warmup 1 -o benchmarks/results/latency
