#!/usr/bin/env bash
# Container entry point of the RunPod worker: memory allocator, GPU check, then the worker.
set -euo pipefail

# tcmalloc, as worker-comfyui uses, for steadier memory use with large models.
TCMALLOC="$(ldconfig -p | grep -Po 'libtcmalloc.so.\d' | head -n 1 || true)"
if [ -n "${TCMALLOC}" ]; then
    export LD_PRELOAD="${TCMALLOC}"
fi

# GPU check, as upstream: a worker without a usable GPU exits at once so that RunPod replaces it.
# COMFY_FORCE_CPU=true skips it (CPU-only testing of the image).
if [ "${COMFY_FORCE_CPU:-false}" != "true" ]; then
    if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() and torch.cuda.device_count() > 0 else 1)'; then
        echo "worker: no usable CUDA GPU (torch.cuda.is_available() is false); set COMFY_FORCE_CPU=true to run on the CPU" >&2
        exit 1
    fi
    python -c 'import torch; print("worker: GPU", torch.cuda.get_device_name(0), "CUDA", torch.version.cuda)'
fi

cd /app
# SERVE_API_LOCALLY=true serves the SDK's local API on 0.0.0.0 (handled by the worker itself).
exec python -u -m embedded.handler "$@"
