#!/usr/bin/env bash
# Build the image, and test it as a user would, with docker or podman:
#
#   docker/image.sh base                            only the Debian base that BASE_IMAGE=auto makes
#   docker/image.sh build        (make image)       the Dockerfile, tagged $IMAGE (default comfy-embedded:local)
#   docker/image.sh test         (make image-test)  build, then: the worker on test_input.json (exit 0, one
#                                                   image), the Comfy API v2 server (health and one job), a
#                                                   derived image (a custom node and a model added, as the
#                                                   README tells) running a job that uses both, and the worker
#                                                   with a network volume holding models and custom nodes
#
# Settings (environment): ENGINE (docker or podman; default: whichever is there, docker first),
# IMAGE, BASE_IMAGE and TORCH_INDEX_URL (the Dockerfile's build arguments; when no registry is
# reachable, BASE_IMAGE=auto makes a Debian base with mmdebstrap and takes torch from the package
# index), and ENGINE_FLAGS (added to every build and run).
#
# On a machine like this project's (root, no Docker engine, only the package registries): podman
# with runc (crun fails there), the container's file limits at the machine's, host networking, and
# pip inside the build seeing what the host's pip sees (its configuration files, the local wheel and
# index folders they name, its CA bundle: mounted read-only). All of it is done below when podman is
# the engine.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:?usage: docker/image.sh build|test|base}"
ENGINE="${ENGINE:-$(command -v docker >/dev/null 2>&1 && echo docker || echo podman)}"
IMAGE="${IMAGE:-comfy-embedded:local}"
BASE_IMAGE="${BASE_IMAGE:-}"
flags=()
build_flags=()
if [ "$ENGINE" = podman ]; then
    command -v runc >/dev/null 2>&1 && flags+=(--runtime runc)
    hard="$(ulimit -Hn)"
    flags+=(--ulimit "nofile=$hard:$hard" --ulimit nproc=4096:4096 --network host)
    # pip in the build sees what the host's pip sees
    while read -r file; do
        [ -f "$file" ] && build_flags+=(-v "$file:$file:ro")
    done < <(python3 -m pip config debug 2>/dev/null | sed -n 's/^ *\(\/[^,]*\), exists: True$/\1/p')
    while read -r path; do
        path="${path#file://}"
        path="${path%/}"
        [ "$(basename "$path")" = simple ] && path="$(dirname "$path")"  # a local index: its files lie beside
        [ -e "$path" ] && build_flags+=(-v "$path:$path:ro")
    done < <(python3 -m pip config list 2>/dev/null | sed -n "s/^[^=]*\.\(find-links\|extra-index-url\|index-url\|constraint\|cert\)='\(.*\)'$/\2/p" | tr ' ' '\n' | grep -E '^(file://)?/')
fi
read -r -a extra <<< "${ENGINE_FLAGS:-}"
flags+=("${extra[@]}")

base_args=()
if [ "$BASE_IMAGE" = auto ] || [ "$what" = base ]; then  # `docker/image.sh base`: only this step
    BASE_IMAGE=localhost/comfy-embedded-base:bookworm
    if ! "$ENGINE" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        tar="$(mktemp -d)/base.tar"
        mmdebstrap --variant=minbase --include=ca-certificates bookworm "$tar"
        "$ENGINE" import "$tar" "$BASE_IMAGE"
        rm -rf "$(dirname "$tar")"
    fi
    echo "image.sh: base image $BASE_IMAGE"
    [ "$what" = base ] && exit 0
    TORCH_INDEX_URL="${TORCH_INDEX_URL-}"
fi
[ -n "$BASE_IMAGE" ] && base_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[ -n "${TORCH_INDEX_URL+set}" ] && base_args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")

build() {  # build [TAG] [CONTEXT] [more build flags...]
    local tag="$1" context="$2"
    shift 2
    "$ENGINE" build "${flags[@]}" "${build_flags[@]}" "$@" -t "$tag" "$context"
}

run() {
    "$ENGINE" run --rm "${flags[@]}" "$@"
}

started=$SECONDS
build "$IMAGE" . "${base_args[@]}"
echo "image.sh: $IMAGE built in $((SECONDS - started)) s"
"$ENGINE" image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "image.sh: %.1f GB\n", $1 / 1e9}'
[ "$what" = build ] && exit 0

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cpu=(-e COMFY_FORCE_CPU=true -e RUNPOD_SKIP_GPU_CHECK=true -e RUNPOD_SKIP_AUTO_SYSTEM_CHECKS=true)

echo "image.sh: 1. the worker runs test_input.json and exits 0"
run "${cpu[@]}" "$IMAGE" python -m embedded.handler > "$work/worker.log" 2>&1 || { tail -30 "$work/worker.log"; exit 1; }
grep -q "completed successfully" "$work/worker.log" && grep -q "'images': \[{'filename'" "$work/worker.log" \
    || { tail -30 "$work/worker.log"; echo "image.sh: no image in the answer"; exit 1; }

echo "image.sh: 2. the Comfy API v2 server answers health and runs a job"
port=18189
name="comfy-embedded-test-$$"
"$ENGINE" run -d --name "$name" "${flags[@]}" "${cpu[@]}" -e SERVE_API_V2=true -e SERVE_TOKEN=t0ken \
    -e SERVE_PORT="$port" "$IMAGE" > /dev/null
stop_server() { "$ENGINE" rm -f "$name" > /dev/null 2>&1 || true; }
trap 'stop_server; rm -rf "$work"' EXIT
python3 - "$port" <<'EOF'
import json, sys, time, urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}/api/v2"
def call(method, path, body=None):
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": "Bearer t0ken", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)
deadline = time.time() + 300
while True:
    try:
        if call("GET", "/health")["status"] == "healthy":
            break
    except OSError:
        pass
    assert time.time() < deadline, "the server never became healthy"
    time.sleep(2)
workflow = json.load(open("test_input.json"))["input"]["workflow"]
job = call("POST", "/jobs", {"workflow": workflow})
while (status := call("GET", f"/jobs/{job['id']}"))["status"] in ("queued", "running"):
    time.sleep(0.5)
assert status["status"] == "succeeded" and status["outputs"], status
print("image.sh: the server ran job", job["id"])
EOF
stop_server

echo "image.sh: 3. a derived image with a custom node and a model runs a job that uses both"
mkdir -p "$work/derived/embedded_image_test" "$work/derived/model"
cat > "$work/derived/embedded_image_test/__init__.py" <<'EOF'
import folder_paths


class EmbeddedImageTestModelSize:
    """Reads a checkpoint's size: the derived image's node and model, used together."""
    CATEGORY = "embedded_tests"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}

    def run(self, ckpt_name):
        import os
        return {"ui": {"text": [f"{ckpt_name}: {os.path.getsize(folder_paths.get_full_path('checkpoints', ckpt_name))} bytes"]}}


NODE_CLASS_MAPPINGS = {"EmbeddedImageTestModelSize": EmbeddedImageTestModelSize}
EOF
head -c 4096 /dev/urandom > "$work/derived/model/derived-test.safetensors"
cat > "$work/derived/Dockerfile" <<EOF
FROM $IMAGE
COPY embedded_image_test /comfyui/custom_nodes/embedded_image_test
COPY model/derived-test.safetensors /comfyui/models/checkpoints/derived-test.safetensors
EOF
build "$IMAGE-derived" "$work/derived"
node_job='{"input": {"workflow": {"1": {"class_type": "EmbeddedImageTestModelSize", "inputs": {"ckpt_name": "derived-test.safetensors"}}}}}'
run "${cpu[@]}" "$IMAGE-derived" python -m embedded.handler --test_input "$node_job" > "$work/derived.log" 2>&1 \
    || { tail -30 "$work/derived.log"; exit 1; }
grep -q "derived-test.safetensors: 4096 bytes" "$work/derived.log" || { tail -30 "$work/derived.log"; exit 1; }
"$ENGINE" rmi "$IMAGE-derived" > /dev/null

echo "image.sh: 4. the worker finds models and custom nodes on a network volume"
mkdir -p "$work/volume/models/checkpoints" "$work/volume/custom_nodes"
cp -r "$work/derived/embedded_image_test" "$work/volume/custom_nodes/"
cp "$work/derived/model/derived-test.safetensors" "$work/volume/models/checkpoints/volume-test.safetensors"
volume_job='{"input": {"workflow": {"1": {"class_type": "EmbeddedImageTestModelSize", "inputs": {"ckpt_name": "volume-test.safetensors"}}}}}'
run "${cpu[@]}" -v "$work/volume:/runpod-volume" "$IMAGE" python -m embedded.handler --test_input "$volume_job" \
    > "$work/volume.log" 2>&1 || { tail -30 "$work/volume.log"; exit 1; }
grep -q "volume-test.safetensors: 4096 bytes" "$work/volume.log" || { tail -30 "$work/volume.log"; exit 1; }
echo "image.sh: every check passed in $((SECONDS - started)) s"
