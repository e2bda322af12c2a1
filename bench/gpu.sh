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
#
# On the lent GPU machine (Python 3.12 with its own torch, no network): run `make gpu-pack` here
# first, then call the device tool's run with
#   command: bash bench/gpu.sh $OUT/bench     carry: [".gpu-carry/pack"]     timeout_s: 600
# When .gpu-carry/pack is there, this installs its wheels with pip --no-index into a folder on
# PYTHONPATH (GPU_SITE, default /tmp/gpu-site; the device's own torch and numpy stay as they are),
# unpacks the vendored tree where vendor/ComfyUI does not verify, and checks the requirements.
set -euo pipefail
out="${1:?usage: bench/gpu.sh OUT_DIR}"
cd "$(dirname "$0")/.."
# the whole command within the device tool's 10 minutes: the bench gets what the setup leaves
budget="${GPU_SH_BUDGET_S:-585}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
pack=.gpu-carry/pack
# the pack's wheels are for the device's Python (3.12), never for this checkout's .venv
if [ -f "$pack/pack.json" ] && [ "$PYTHON" != .venv/bin/python ] \
        && "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    use_pack=1
else
    use_pack=0
fi
if [ "$use_pack" = 1 ]; then
    site="${GPU_SITE:-/tmp/gpu-site}"
    wheels="$(mktemp -d /tmp/gpu-wheels.XXXXXX)"
    rm -rf "$site"
    "$PYTHON" bench/gpu_pack.py --device-prepare "$pack" "$wheels"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
        --find-links "$wheels" --target "$site" -r "$wheels/install.txt"
    echo "gpu.sh: $(wc -l < "$wheels/install.txt") wheels from $pack installed into $site ($(du -sh "$site" | cut -f1))"
    rm -rf "$wheels"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
ngpu="$("$PYTHON" -c 'import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu.sh: no CUDA device")
print("gpu.sh:", torch.cuda.get_device_name(0), "x", torch.cuda.device_count(), "torch", torch.__version__, file=sys.stderr)
print(torch.cuda.device_count())')"
# several GPUs: the several-devices part (bench/devices.py) runs COMFY_DEVICES=all against one
# executor; with one GPU it is left out (its cpu,cpu default says nothing of a GPU)
if [ "$ngpu" -gt 1 ]; then
    export BENCH_DEVICES="${BENCH_DEVICES:-all}" BENCH_DEVICE_JOBS="${BENCH_DEVICE_JOBS:-$((4 * ngpu))}"
    echo "gpu.sh: $ngpu CUDA devices: the several-devices part runs COMFY_DEVICES=$BENCH_DEVICES"
else
    export BENCH_DEVICE_JOBS="${BENCH_DEVICE_JOBS:-0}"
fi
if [ "$use_pack" = 1 ]; then
    "$PYTHON" bench/gpu_pack.py --check-env "$pack"
    if [ ! -d vendor/ComfyUI/comfy/__pycache__ ]; then  # freshly unpacked: bytecode once, as `make vendor` does
        "$PYTHON" -m compileall -q -j 0 vendor/ComfyUI embedded >/dev/null || true
    fi
fi
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
left=$((budget - SECONDS))
if [ "$left" -gt 570 ]; then left=570; fi
echo "gpu.sh: setup took ${SECONDS} s; the bench gets ${left} s"
timeout "$left" "$PYTHON" bench/run.py
