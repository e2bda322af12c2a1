#!/usr/bin/env bash
# The same side-by-side benchmark on a CUDA machine, with the full SD1.5-architecture file
# (random weights, 2.1 GB) at 512 px and 20 steps. One prepared command, under 10 minutes on a
# current data-centre GPU:
#
#   bench/gpu.sh OUT_DIR
#
# Needs: this repository with vendor/ComfyUI filled (`python -m embedded.tooling.vendor`, or carried),
# a Python with torch (CUDA) + torchvision + torchaudio and this package's other requirements
# (PYTHON, default .venv/bin/python or python3). Writes OUT_DIR/latest.json and OUT_DIR/latest.md.
set -euo pipefail
out="${1:?usage: bench/gpu.sh OUT_DIR}"
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c 'import sys, torch; print("gpu.sh:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else sys.exit("gpu.sh: no CUDA device"))'
"$PYTHON" -m embedded.tooling.vendor --check || "$PYTHON" -m embedded.tooling.vendor

export BENCH_OUT="$out" \
       BENCH_RECIPE=sd15 \
       BENCH_TXT2IMG_SIZES=512 \
       BENCH_STEPS=20 \
       BENCH_JOBS="${BENCH_JOBS:-30}" \
       BENCH_RSS_JOBS="${BENCH_RSS_JOBS:-200}" \
       BENCH_COLD_RUNS="${BENCH_COLD_RUNS:-3}" \
       BENCH_SOAK_JOBS="${BENCH_SOAK_JOBS:-0}" \
       BENCH_API_JOBS="${BENCH_API_JOBS:-0}"  # the soak and the API scenario (make bench) do not fit in 10 minutes here
timeout 570 "$PYTHON" bench/run.py
