#!/usr/bin/env bash
# Container entry point: memory allocator, then the RunPod worker (with its GPU check), or, with
# SERVE_API_V2=true, the Comfy API v2 server (python -m embedded serve) on 0.0.0.0:${SERVE_PORT:-8189}:
# it needs SERVE_TOKEN (or SERVE_UNSAFE_NO_TOKEN=true); probe it at /api/v2/health.
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

cd "${APP_DIR:-/app}"
if [ "${SERVE_API_V2:-false}" = "true" ]; then
    exec python -u -m embedded serve --host "${SERVE_HOST:-0.0.0.0}" "$@"
fi
# SERVE_API_LOCALLY=true serves the SDK's local API on 0.0.0.0 (handled by the worker itself).
exec python -u -m embedded.handler ${GPU_CHECK} "$@"
