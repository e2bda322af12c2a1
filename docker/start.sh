#!/usr/bin/env bash
# Container entry point of the RunPod worker: memory allocator, GPU check, then the worker.
set -euo pipefail

# tcmalloc, as worker-comfyui uses, for steadier memory use with large models.
TCMALLOC="$(ldconfig -p | grep -Po 'libtcmalloc.so.\d' | head -n 1 || true)"
if [ -n "${TCMALLOC}" ]; then
    export LD_PRELOAD="${TCMALLOC}"
fi

# GPU check, as upstream: a worker without a usable GPU exits at once so that RunPod replaces it.
# The worker does it itself (--require-gpu), with the torch it imports anyway: no second Python
# start. COMFY_FORCE_CPU=true skips it (CPU-only testing of the image).
GPU_CHECK="--require-gpu"
if [ "${COMFY_FORCE_CPU:-false}" = "true" ]; then
    GPU_CHECK=""
fi

cd /app
# SERVE_API_LOCALLY=true serves the SDK's local API on 0.0.0.0 (handled by the worker itself).
exec python -u -m embedded.handler ${GPU_CHECK} "$@"
