#!/usr/bin/env bash
# Container entry point of the RunPod worker: memory allocator, GPU check, then the worker.
set -euo pipefail

# tcmalloc, as worker-comfyui uses, for steadier memory use with large models.
TCMALLOC="$(ldconfig -p | grep -Po 'libtcmalloc.so.\d' | head -n 1 || true)"
if [ -n "${TCMALLOC}" ]; then
    export LD_PRELOAD="${TCMALLOC}"
fi

# GPU check, as upstream: a worker without a usable GPU exits so that RunPod replaces it. The
# worker does it itself (--require-gpu): at once when the container has no NVIDIA device, and
# after the boot when torch cannot use CUDA (no extra Python start). COMFY_FORCE_CPU=true skips it.
GPU_CHECK="--require-gpu"
if [ "${COMFY_FORCE_CPU:-false}" = "true" ]; then
    GPU_CHECK=""
fi

cd /app
# SERVE_API_LOCALLY=true serves the SDK's local API on 0.0.0.0 (handled by the worker itself).
exec python -u -m embedded.handler ${GPU_CHECK} "$@"
