"""Gather what ``bench/gpu.sh`` needs on the lent GPU machine, for one call of the device tool.

That machine has Python 3.12, its own torch (and a long list of other packages: the device tool's
KINDS.md, section "Python packages already there"), no network, and takes at most 64 MiB of
working tree (tracked files, untracked files that are not ignored, and the ignored paths a call
names in ``carry``). This script fills an ignored folder (default ``.gpu-carry/``)::

    .gpu-carry/wheels/           cp312 manylinux x86_64 wheels from PyPI, as pip downloads them
                                 (they stay here: the completeness checks run against them)
    .gpu-carry/fallbacks/        small wheels of device packages whose version is not known here
    .gpu-carry/pack/             what travels (``carry: [".gpu-carry/pack"]``):
        wheels.tar.xz              both sets of wheels, their members stored uncompressed, in one
                                   xz stream (a third smaller than the wheels; TRIM's files left out)
        requirements.txt           name==version of each needed wheel (gpu.sh installs these)
        fallbacks.txt              name==version of each fallback (installed where the device's
                                   own version falls short of pack.json's specifier)
        ComfyUI.tar.xz             the pinned vendored tree (the manifest's files), checked against
                                   the manifest on the device by ``embedded.tooling.vendor --check``
        pack.json                  what was decided: the project's requirements, the omissions, the
                                   fallbacks, the versions assumed on the device

Which distributions travel: this package's runtime dependencies (pyproject.toml) and ComfyUI's
requirements.txt, with their dependencies, resolved one wheel at a time (``pip download
--no-deps``, so that nothing pulls torch or CUDA wheels), less

- what the device has: a package it has only travels when the version KINDS.md gives for it is
  too old for a requirement; where KINDS.md gives no version, the device's is assumed to do, a
  fallback wheel travels when small (FALLBACK_MAX_BYTES), and gpu.sh checks the versions there,
- torch, torchvision, torchaudio, triton, nvidia-* and cuda-*: the device's own are used,
- OMIT below: what the GPU bench never imports and that would not fit in the 64 MiB.

The wheels are the ones this checkout's .venv has where that version fits (the tested set), else
the newest that does. Then two ``pip install --dry-run --no-index`` checks: every carried wheel
(each pinned wheel is there and installs on cp312 manylinux x86_64), and the project's
requirements with all their dependencies, against the needed wheels plus empty stand-in wheels for
what the device has and for the omissions (the set is complete: pip's resolver finds every
dependency, and no other). Last, the sizes: the command fails when the pack and the working tree
that travels with it exceed BUDGET_MIB.

    .venv/bin/python bench/gpu_pack.py [DEST]                  (make gpu-pack)
    python3 bench/gpu_pack.py --device-prepare PACK WHEELS     (gpu.sh on the device, before pip)
    python3 bench/gpu_pack.py --check-env PACK                 (gpu.sh on the device, after pip)
"""

from __future__ import annotations

import argparse
import email.parser
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEST = REPO / ".gpu-carry"
KINDS_MD = Path(os.environ.get("GPU_KINDS_MD", "/work/.library/device/KINDS.md"))
VENDOR_TREE = REPO / "vendor" / "ComfyUI"
MANIFEST = REPO / "vendor" / "comfyui.manifest"

MIB = 1 << 20
#: the device tool takes 64 MiB in all; this leaves room for what the other engineers add meanwhile
BUDGET_MIB = 60

#: the device's Python and machine, for pip and for environment markers
PYTHON_VERSION = "3.12"
MARKER_ENV = {
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "implementation_version": "3.12.3", "platform_python_implementation": "CPython", "os_name": "posix",
    "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
    "platform_release": "", "platform_version": "",
}
#: pip matches manylinux tags exactly: the device's torch (2.11) already needs glibc 2.28
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")

#: never carried: the device's own builds are the ones to use (a wheel that depends on them is
#: downloaded with --no-deps like every other, so they are never pulled)
DEVICE_OWN = ("torch", "torchvision", "torchaudio", "triton")
DEVICE_OWN_PREFIXES = ("nvidia-", "cuda-")

#: required somewhere, never imported by the GPU bench, and too big for the 64 MiB (sizes: cp312
#: wheels, 2026-12); the bench runs without them
OMIT = {
    "comfyui-workflow-templates": "ComfyUI's workflow templates (about 90 MB of wheels with its media packages): "
                                  "its server logs that they are missing and serves no /templates; no job uses them",
    "comfyui-workflow-templates-core": "part of comfyui-workflow-templates",
    "comfyui-workflow-templates-media-api": "part of comfyui-workflow-templates",
    "comfyui-workflow-templates-media-image": "part of comfyui-workflow-templates",
    "comfyui-workflow-templates-media-other": "part of comfyui-workflow-templates",
    "comfyui-workflow-templates-media-video": "part of comfyui-workflow-templates",
    "comfyui-embedded-docs": "the nodes' documentation pages (8 MB): ComfyUI's server logs their absence at info level",
    "boto3": "S3 uploads (ours and runpod's rp_upload; 18 MB with botocore): the bench uploads nothing",
    "psycopg": "the API v2 replicas' PostgreSQL driver (serve --state postgresql://...): the GPU bench runs no "
               "replicas",
    "psycopg-binary": "part of psycopg (its libpq, 4 MB)",
    "psycopg-pool": "part of psycopg",
    "fastapi-cli": "the fastapi command (fastapi[all] for runpod): runpod's local API imports fastapi and uvicorn only",
    "fastapi-cloud-cli": "the fastapi cloud command (fastapi[all]): not imported",
    "inquirerpy": "runpod's command-line tool (prompts; 1.3 MB with prompt-toolkit and wcwidth): not imported",
    "prettytable": "runpod's command-line tool (tables): not imported",
    "watchdog": "runpod's command-line tool (file watching): not imported",
}

#: carried with part of their files left out (the wheel's RECORD rewritten to match): suffixes of
#: the files left out, and why
TRIM = {
    "comfyui-frontend-package": ((".map", ".mp4", ".webm"),
                                 ("the browser frontend's source maps and demo videos (about 26 MB of its 44): "
                                  "the bench never loads the frontend, ComfyUI's server only needs the package there")),
}

#: a device package whose version KINDS.md does not give, where a requirement has a lower bound:
#: its wheel travels too when at most this size, and gpu.sh installs it only where the device's
#: version falls short
FALLBACK_MAX_BYTES = 400_000

#: a copy of KINDS.md's list, for when that file is not there (read 2026-11-17)
DEVICE_PACKAGES_FALLBACK = """
absl-py, accelerate, aiofiles, aiohappyeyeballs, aiohttp, aiosignal, annotated-doc, anyio, attrs, botorch, build,
certifi, charset-normalizer, chex, click, cloudpickle, cmake, colorama, contourpy, coverage, cuda-bindings, cuda-core,
cuda-pathfinder, cuda-toolkit, cupy-cuda13x, cycler, cython, diffrax, e3nn, einops, equinox, etils, execnet, filelock,
flatbuffers, flax, fonttools, formulaic, frozenlist, fsspec, gpytorch, grpcio, h11, h5py, hf-xet, httpcore, httpx,
huggingface-hub, humanize, hypothesis, idna, imageio, iniconfig, interface-meta, jax, jax-cuda13-pjrt,
jax-cuda13-plugin, jaxlib, jaxtyping, jinja2, joblib, kiwisolver, lazy-loader, lightning, lightning-utilities,
linear-operator, lineax, llvmlite, lxml, markdown, markdown-it-py, markupsafe, matplotlib, mdurl, meson, ml-dtypes,
mpi4py, mpmath, msgpack, multidict, multipledispatch, mypy-extensions, nanobind, narwhals, networkx, ninja, numba,
numba-cuda, numpy, numpyro, nvidia-cublas, nvidia-cuda-cupti, nvidia-cuda-nvrtc, nvidia-cuda-runtime, nvidia-cudnn-cu13,
nvidia-cufft, nvidia-cufile, nvidia-curand, nvidia-cusolver, nvidia-cusparse, nvidia-cusparselt-cu13, nvidia-ml-py,
nvidia-nccl-cu13, nvidia-nvjitlink, nvidia-nvshmem-cu13, nvidia-nvtx, onnx, onnx-ir, onnxruntime, onnxscript,
opencv-python-headless, optax, opt-einsum, opt-einsum-fx, optimistix, orbax-checkpoint, packaging, pandas, pathspec,
patsy, peft, pillow, pip, pluggy, portalocker, prometheus-client, propcache, protobuf, psutil, pyarrow, pybind11,
py-cpuinfo, pygments, pyparsing, pyproject-hooks, pyre-extensions, pytest, pytest-benchmark, pytest-cov, pytest-mock,
pytest-timeout, pytest-xdist, python-dateutil, pytorch-lightning, pyyaml, regex, requests, rich, sacrebleu,
safetensors, scikit-build-core, scikit-image, scikit-learn, scipy, seaborn, sentencepiece, sentence-transformers,
setuptools, shellingham, simplejson, six, sortedcontainers, statsmodels, sympy, tabulate, tensorboard,
tensorboard-data-server, tensorstore, threadpoolctl, tifffile, tiktoken, timm, tokenizers, toolz, torch, torchaudio,
torchdiffeq, torch-geometric, torchmetrics, torchvision, tqdm, transformers, treescope, triton, typer,
typing-extensions, typing-inspect, urllib3, uvloop, wadler-lindig, werkzeug, wheel, wrapt, xarray, xxhash, yarl, zipp
"""
#: the versions KINDS.md's "pip list" row gives (the others are not known here)
DEVICE_VERSIONS_FALLBACK = {
    "accelerate": "1.15.0", "botorch": "0.18.1", "cupy-cuda13x": "14.2.0", "gpytorch": "1.15.2",
    "huggingface-hub": "1.33.0", "jax": "0.11.2", "jax-cuda13-pjrt": "0.11.2", "jax-cuda13-plugin": "0.11.2",
    "jaxlib": "0.11.2", "jaxtyping": "0.3.11", "numpy": "2.5.2", "numpyro": "0.21.0", "onnx": "1.23.1",
    "onnx-ir": "1.0.0", "onnxruntime": "1.30.0", "onnxscript": "0.7.2", "pytorch-lightning": "2.6.6",
    "safetensors": "0.8.0", "sentence-transformers": "6.0.1", "sentencepiece": "0.2.2", "tiktoken": "0.14.0",
    "tokenizers": "0.23.2", "torch": "2.11.0", "torch-geometric": "2.8.0.post1", "torchaudio": "2.11.0",
    "torchdiffeq": "0.2.5", "torchmetrics": "1.9.0", "torchvision": "0.26.0", "transformers": "5.17.0",
    "triton": "3.6.0",
}


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


# --- what the device has --------------------------------------------------------------------------

def device_packages(kinds: Path = KINDS_MD) -> tuple[dict[str, str | None], str]:
    """Name -> version (None where not known) of what the device's python3 has, and where from."""
    names_text, versions, source = DEVICE_PACKAGES_FALLBACK, dict(DEVICE_VERSIONS_FALLBACK), "built-in copy"
    if kinds.is_file():
        text = kinds.read_text()
        section = text.split("## Python packages already there", 1)
        found = re.search(r"Packages:\s*(.+?)\.\s*$", section[1], re.MULTILINE | re.DOTALL) if len(section) == 2 else None
        if found:
            names_text, source = found.group(1), str(kinds)
            for row in re.findall(r"^\| pip list[^|]*\|(.+)\|\s*$", text, re.MULTILINE):
                listed = row.split(":", 2)[-1]
                for name, version in re.findall(r"([A-Za-z0-9][A-Za-z0-9._-]*) (\d[0-9A-Za-z.+!-]*)", listed):
                    versions[canon(name)] = version.rstrip(".")
    names = {canon(n) for n in re.split(r"[,\s]+", names_text) if n.strip()}
    return {n: versions.get(n) for n in sorted(names)}, source


# --- the project's requirements -------------------------------------------------------------------

def project_requirements() -> list:
    """This package's runtime dependencies and ComfyUI's requirements.txt, merged by name."""
    import tomllib

    from packaging.requirements import Requirement

    reqs = list(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    comfy = VENDOR_TREE / "requirements.txt"
    if comfy.is_file():
        reqs += [line.split("#", 1)[0].strip() for line in comfy.read_text().splitlines()]
    merged: dict = {}
    for text in filter(None, reqs):
        req = Requirement(text)
        if req.marker and not req.marker.evaluate(MARKER_ENV):
            continue
        key = canon(req.name)
        if key in merged:
            merged[key].specifier &= req.specifier
            merged[key].extras |= req.extras
        else:
            merged[key] = req
    return list(merged.values())


def venv_versions() -> dict[str, str]:
    """What this checkout's .venv has (the set the project is tested with here)."""
    from importlib import metadata
    return {canon(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


# --- wheels ---------------------------------------------------------------------------------------

def pip_env() -> dict[str, str]:
    """pip without this machine's own find-links and mirrors: only what the command names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in ("PIP_CERT",)}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def target_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def wheel_files(folder: Path) -> dict[str, list[tuple[str, Path]]]:
    from packaging.utils import parse_wheel_filename
    found: dict[str, list[tuple[str, Path]]] = {}
    for path in sorted(folder.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(path.name)
        found.setdefault(canon(name), []).append((str(version), path))
    return found


def wheel_requires(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        meta = next(n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        message = email.parser.Parser().parsestr(zf.read(meta).decode("utf-8", "replace"))
    return message.get_all("Requires-Dist") or []


def download(specs: list[str], dest: Path) -> None:
    """pip download --no-deps of each spec (in one pip call; one by one to name the one that fails)."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(dest), *target_args()]
    if subprocess.run(cmd + specs, env=pip_env(), capture_output=True, text=True, check=False).returncode == 0:
        return
    for spec in specs:
        result = subprocess.run(cmd + [spec], env=pip_env(), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"gpu_pack: pip download {spec} failed:\n{result.stderr.strip()}")


class Resolution:
    """Which distributions travel, one wheel at a time (no pip resolver: it would pull torch)."""

    def __init__(self, wheels: Path, device: dict[str, str | None], venv: dict[str, str]):
        from packaging.specifiers import SpecifierSet
        self.wheels, self.device, self.venv = wheels, device, venv
        self.fallback_dir = wheels.parent / "fallbacks"
        self.needs: dict[str, dict] = {}       # carried: name -> {"spec", "extras", "by", "done"}
        self.chosen: dict[str, tuple[str, Path]] = {}
        self.on_device: dict[str, dict] = {}   # met there: name -> {"version", "spec", "by"}
        self.omitted: dict[str, dict] = {}     # name -> {"spec", "by"}
        self.fallbacks: dict[str, tuple[str, Path]] = {}
        self.no_fallback: dict[str, int] = {}  # name -> its wheel's size, over FALLBACK_MAX_BYTES
        self._spec = SpecifierSet

    def skip(self, req, by: str) -> bool:
        """Whether ``req`` (required by ``by``) is met without carrying a wheel; records why."""
        from packaging.version import Version
        name = canon(req.name)
        if name in OMIT:
            entry = self.omitted.setdefault(name, {"spec": self._spec(), "by": set()})
            entry["spec"] &= req.specifier
            entry["by"].add(by)
            return True
        if name in self.needs:  # carried already (the device's version did not do for an earlier one)
            return False
        own = name in DEVICE_OWN or name.startswith(DEVICE_OWN_PREFIXES)
        if name in self.device or own:
            version = self.device.get(name)
            entry = self.on_device.setdefault(name, {"version": version, "spec": self._spec(), "by": set()})
            entry["spec"] &= req.specifier
            entry["by"].add(by)
            if own or version is None or entry["spec"].contains(Version(version), prereleases=True):
                return True
            # the device's version is too old (or too new) for this requirement: carry one
            self.on_device.pop(name)
        return False

    def add(self, req, by: str) -> None:
        if self.skip(req, by):
            return
        name = canon(req.name)
        need = self.needs.setdefault(name, {"spec": self._spec(), "extras": set(), "by": set(), "done": None})
        need["spec"] &= req.specifier
        need["extras"] |= set(req.extras)
        need["by"].add(by)

    def pending(self) -> list[str]:
        from packaging.version import Version
        out = []
        for name, need in self.needs.items():
            state = (str(need["spec"]), tuple(sorted(need["extras"])))
            chosen = self.chosen.get(name)
            if need["done"] != state or not chosen or not need["spec"].contains(Version(chosen[0]), prereleases=True):
                out.append(name)
        return out

    def pin(self, name: str, spec) -> str:
        """The .venv's version where it meets ``spec`` (tested here), else the newest that does."""
        from packaging.version import Version
        pinned = self.venv.get(name)
        if pinned and spec.contains(Version(pinned), prereleases=True):
            return f"{name}=={pinned}"
        return f"{name}{spec}"

    def fetch(self, specs: list[str], folder: Path) -> list[tuple[str, Path]]:
        from packaging.requirements import Requirement
        from packaging.version import Version
        download(specs, folder)
        have, out = wheel_files(folder), []
        for text in specs:
            req = Requirement(text)
            fits = [(v, p) for v, p in have.get(canon(req.name), [])
                    if req.specifier.contains(Version(v), prereleases=True)]
            if not fits:
                raise SystemExit(f"gpu_pack: pip download {text} left no matching wheel in {folder}")
            out.append(max(fits, key=lambda vp: Version(vp[0])))
        return out

    def run(self, top: list) -> None:
        from packaging.requirements import Requirement
        for req in top:
            self.add(req, "project")
        while todo := self.pending():
            specs = [self.pin(name, self.needs[name]["spec"]) for name in todo]
            for name, chosen in zip(todo, self.fetch(specs, self.wheels)):
                need = self.needs[name]
                self.chosen[name] = chosen
                need["done"] = (str(need["spec"]), tuple(sorted(need["extras"])))
                extras = [""] + sorted(need["extras"])
                for text in wheel_requires(chosen[1]):
                    req = Requirement(text)
                    if req.marker and not any(req.marker.evaluate({**MARKER_ENV, "extra": e}) for e in extras):
                        continue
                    self.add(req, name)
        # the device's packages of unknown version that a requirement bounds: a small wheel as well,
        # kept apart (the dry run of the project's requirements must not see them)
        assumed = self.assumed()
        self.fallback_dir.mkdir(exist_ok=True)
        if assumed:
            fetched = self.fetch([self.pin(n, e["spec"]) for n, e in assumed.items()], self.fallback_dir)
            for name, (version, path) in zip(assumed, fetched):
                if path.stat().st_size <= FALLBACK_MAX_BYTES:
                    self.fallbacks[name] = (version, path)
                else:
                    self.no_fallback[name] = path.stat().st_size
        keep = {path for _, path in [*self.chosen.values(), *self.fallbacks.values()]}
        for path in [*self.wheels.glob("*.whl"), *self.fallback_dir.glob("*.whl")]:  # earlier runs' ones
            if path not in keep:
                path.unlink()

    def assumed(self) -> dict[str, dict]:
        return {n: e for n, e in sorted(self.on_device.items()) if e["version"] is None and str(e["spec"])}


# --- the completeness checks ----------------------------------------------------------------------

def stub_wheel(folder: Path, name: str, version: str) -> None:
    """An empty wheel that stands for a distribution the device has (or one left out on purpose)."""
    dist = f"{re.sub(r'[-.]+', '_', name)}-{version}"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: gpu_pack\nRoot-Is-Purelib: true\n"
                                               "Tag: py3-none-any\n")
        zf.writestr(f"{dist}.dist-info/RECORD", "")


def stand_in_version(spec, known: str | None, venv: str | None) -> str:
    """The version a stand-in gets: the device's where known, else one that meets ``spec``."""
    from packaging.version import Version
    if known:
        return known
    if venv and spec.contains(Version(venv), prereleases=True):
        return venv
    lows = [s.version for s in spec if s.operator in (">=", "==", "~=", "===")]
    return max(lows, key=Version) if lows else "1.0"


def dry_run(args: list[str], label: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="gpu-pack-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet", *target_args(),
               "--target", str(Path(tmp) / "target"), "--report", str(report), *args]
        shown = " ".join(re.sub(r"^/tmp/gpu-[^/]+", "<tmp>", a) for a in cmd[1:])
        print(f"gpu_pack: {label}:\n  python {shown}")
        result = subprocess.run(cmd, env=pip_env(), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"gpu_pack: the dry run failed:\n{result.stderr.strip()}")
        return json.loads(report.read_text())


def check(res: Resolution, top: list, dest: Path) -> None:
    wheels, pack_dir = dest / "wheels", dest / "pack"
    want = {n: v for n, (v, _) in res.chosen.items()}
    # 1. the carried set alone: each pinned wheel is there and installs on the device's Python
    report = dry_run(["--no-deps", "-r", str(pack_dir / "requirements.txt"), "-r", str(pack_dir / "fallbacks.txt"),
                      "--find-links", str(wheels), "--find-links", str(res.fallback_dir)],
                     "dry run 1: every carried wheel, as gpu.sh installs them (--no-deps)")
    got = {canon(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}
    every = want | {n: v for n, (v, _) in res.fallbacks.items()}
    if got != every:
        raise SystemExit(f"gpu_pack: dry run 1 would install {got}, not the carried set {every}")
    print(f"  -> would install the {len(got)} wheels ({len(want)} needed, {len(res.fallbacks)} fallbacks), "
          "nothing else")
    # 2. the project's requirements, resolved by pip against the carried wheels plus stand-ins
    with tempfile.TemporaryDirectory(prefix="gpu-stubs-") as stubs:
        stand_ins = {n: stand_in_version(e["spec"], e["version"], res.venv.get(n)) for n, e in res.on_device.items()}
        stand_ins |= {n: stand_in_version(e["spec"], None, res.venv.get(n)) for n, e in res.omitted.items()}
        for name, version in stand_ins.items():
            stub_wheel(Path(stubs), name, version)
        reqs = Path(stubs) / "project-requirements.txt"
        reqs.write_text("".join(f"{r}\n" for r in top if canon(r.name) not in DEVICE_OWN and canon(r.name) not in OMIT))
        report = dry_run(["-r", str(reqs), "--find-links", str(wheels), "--find-links", stubs],
                         "dry run 2: the project's requirements (pyproject.toml and ComfyUI's requirements.txt, "
                         "less torch, torchvision, torchaudio and OMIT), with all their dependencies, against the "
                         "wheels and empty stand-in wheels for what the device has and for OMIT")
    got = {canon(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}
    from_wheels = {n: v for n, v in got.items() if n in want}
    if from_wheels != want:
        raise SystemExit(f"gpu_pack: dry run 2 resolves the carried names to {from_wheels}, not {want}")
    strays = sorted(set(got) - set(want) - set(stand_ins))
    if strays:
        raise SystemExit(f"gpu_pack: dry run 2 installs {strays}, neither carried nor on the device")
    print(f"  -> resolves: all {len(want)} needed wheels and {len(got) - len(want)} stand-ins would install, "
          "nothing else")


# --- the pack -------------------------------------------------------------------------------------

def xz_tar(out: Path, members: list[tuple[str, bytes | Path]]) -> None:
    """One xz stream of ``members`` (name, bytes or file); multi-threaded xz when there is one."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            if isinstance(data, Path):
                data = data.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    payload = raw.getvalue()
    if shutil.which("xz"):
        with out.open("wb") as fh:
            subprocess.run(["xz", "-9", "-T0", "-c"], input=payload, stdout=fh, check=True)
    else:
        out.write_bytes(lzma.compress(payload, preset=9))


def stored(wheel: Path, name: str) -> bytes:
    """The wheel with its members stored, not deflated: xz then sees the bytes themselves (pip
    installs it the same; RECORD's hashes are of the members, which do not change). TRIM's files
    are left out, and their RECORD lines."""
    drop = TRIM.get(name, ((), ""))[0]

    def dropped(member: str) -> bool:
        return bool(drop) and ".dist-info/" not in member and member.endswith(drop)

    out = io.BytesIO()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if dropped(info.filename):
                continue
            data = src.read(info)
            if drop and re.fullmatch(r"[^/]+\.dist-info/RECORD", info.filename):
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if not dropped(line.decode().rsplit(",", 2)[0]))
            copy = zipfile.ZipInfo(info.filename, info.date_time)
            copy.external_attr, copy.compress_type = info.external_attr, zipfile.ZIP_STORED
            dst.writestr(copy, data)
    return out.getvalue()


def vendor_module():
    """embedded/tooling/vendor.py, loaded by its path: the package's __init__ imports far more."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_gpu_pack_vendor", REPO / "embedded" / "tooling" / "vendor.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree_size(root: Path) -> tuple[int, dict[str, int]]:
    total, parts = 0, {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", ".git")]
        for name in filenames:
            size = (Path(dirpath) / name).stat().st_size
            total += size
            rel = Path(dirpath, name).relative_to(root)
            key = "/".join(rel.parts[:2]) if rel.parts[0] == "comfy" and len(rel.parts) > 2 else rel.parts[0]
            parts[key] = parts.get(key, 0) + size
    return total, parts


def working_tree_size() -> int:
    """What travels without ``carry``: tracked files, untracked files that are not ignored, shared/."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout
    total = 0
    for rel in set(filter(None, out.decode().split("\0"))):
        path = REPO / rel
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    shared = REPO / "shared"
    if shared.is_dir():
        total += sum(p.stat().st_size for p in shared.rglob("*") if p.is_file())
    return total


def pack(res: Resolution, top: list, dest: Path, device_source: str) -> None:
    vendor = vendor_module()
    state = vendor.verify(VENDOR_TREE)
    if not state.ok:
        raise SystemExit(f"gpu_pack: {VENDOR_TREE} does not verify ({state.summary()}): "
                         "run `python -m embedded.tooling.vendor` first")
    files = sorted(vendor.read_manifest())
    out = dest / "pack"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    chosen, fallbacks = sorted(res.chosen.items()), sorted(res.fallbacks.items())
    (out / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, (v, _) in chosen))
    (out / "fallbacks.txt").write_text("".join(f"{n}=={v}\n" for n, (v, _) in fallbacks))
    print(f"gpu_pack: packing {len(chosen)} wheels, {len(fallbacks)} fallbacks and the vendored tree "
          f"({len(files)} files) with xz")
    xz_tar(out / "wheels.tar.xz", [(p.name, stored(p, n)) for n, (_, p) in chosen + fallbacks])
    xz_tar(out / "ComfyUI.tar.xz", [(rel, VENDOR_TREE / rel) for rel in files])
    (out / "pack.json").write_text(json.dumps({
        "python": PYTHON_VERSION, "device_packages_from": device_source,
        "project": [str(r) for r in top],
        "carried": {n: v for n, (v, _) in chosen},
        "trimmed": {n: {"left_out": list(TRIM[n][0]), "reason": TRIM[n][1]} for n in TRIM if n in res.chosen},
        "omitted": {n: {"reason": OMIT[n], "required_by": sorted(e["by"])} for n, e in sorted(res.omitted.items())},
        "fallbacks": {n: {"version": v, "spec": str(res.on_device[n]["spec"])} for n, (v, _) in fallbacks},
        "device_versions_assumed": {n: {"spec": str(e["spec"]), "required_by": sorted(e["by"])}
                                    for n, e in res.assumed().items()},
    }, indent=1) + "\n")


def report_sizes(res: Resolution, dest: Path) -> int:
    wheels = sorted(((p.stat().st_size, n, v) for n, (v, p) in res.chosen.items()), reverse=True)
    print(f"gpu_pack: {len(wheels)} wheels carried ({mib(sum(s for s, _, _ in wheels))} as downloaded):")
    for size, name, version in wheels:
        note = f"  (travels without {', '.join('*' + s for s in TRIM[name][0])})" if name in TRIM else ""
        print(f"  {size / 1e6:7.2f} MB  {name}=={version}{note}")
    for name, entry in sorted(res.omitted.items()):
        print(f"gpu_pack: left out {name}{entry['spec']} (required by {', '.join(sorted(entry['by']))}): {OMIT[name]}")
    assumed = res.assumed()
    if assumed:
        print("gpu_pack: on the device, no version in KINDS.md, assumed to do (gpu.sh checks there; * = a fallback "
              "wheel travels, installed there only where the device's version falls short):")
        for name, entry in assumed.items():
            mark = f" * {res.fallbacks[name][0]}" if name in res.fallbacks else \
                f" (no fallback: {res.no_fallback[name] / 1e6:.1f} MB)" if name in res.no_fallback else ""
            print(f"  {name}{entry['spec']}{mark}")
    tree, parts = tree_size(VENDOR_TREE)
    big = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:4])
    pack_files = sorted((dest / "pack").iterdir())
    carried = sum(p.stat().st_size for p in pack_files)
    work = working_tree_size()
    print(f"gpu_pack: vendor/ComfyUI is {mib(tree)} without __pycache__ and .git (largest: {big}); it travels as "
          "the manifest's files in ComfyUI.tar.xz, checked against the manifest there")
    for p in pack_files:
        print(f"  {p.stat().st_size / MIB:6.2f} MiB  {p.name}")
    print(f"gpu_pack: {dest} is {mib(sum(p.stat().st_size for p in dest.rglob('*') if p.is_file()))} here; "
          f"what travels: {mib(carried)} pack + {mib(work)} working tree = {mib(carried + work)} "
          f"(budget {BUDGET_MIB} MiB of the tool's 64)")
    if carried + work > BUDGET_MIB * MIB:
        print(f"gpu_pack: error: over the {BUDGET_MIB} MiB budget", file=sys.stderr)
        return 1
    rel = (dest / "pack").relative_to(REPO) if (dest / "pack").is_relative_to(REPO) else dest / "pack"
    print(f'gpu_pack: on the device: run(command="bash bench/gpu.sh $OUT/bench", carry=["{rel}"], timeout_s=600)')
    return 0


# --- on the device --------------------------------------------------------------------------------

def installed_version(name: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def device_prepare(pack_dir: Path, wheels: Path) -> int:
    """On the device, before pip: the wheels into ``wheels``, with ``wheels/install.txt`` naming
    the needed ones and the fallbacks this Python's own versions fall short of; the vendored tree
    into vendor/ComfyUI where the one there does not verify."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    info = json.loads((pack_dir / "pack.json").read_text())
    wheels.mkdir(parents=True, exist_ok=True)
    with tarfile.open(pack_dir / "wheels.tar.xz") as tar:
        tar.extractall(wheels, filter="data")
    lines = (pack_dir / "requirements.txt").read_text().splitlines()
    for name, fb in info["fallbacks"].items():
        have = installed_version(name)
        if have is None or not SpecifierSet(fb["spec"]).contains(Version(have), prereleases=True):
            print(f"gpu_pack: {name} {have or '(missing)'} here, {fb['spec']} needed: installing {fb['version']}")
            lines.append(f"{name}=={fb['version']}")
    (wheels / "install.txt").write_text("".join(f"{line}\n" for line in lines))
    vendor = vendor_module()
    if not vendor.verify(VENDOR_TREE).ok:
        staging = Path(tempfile.mkdtemp(prefix=".ComfyUI-", dir=VENDOR_TREE.parent))
        with tarfile.open(pack_dir / "ComfyUI.tar.xz") as tar:
            tar.extractall(staging, filter="data")
        if VENDOR_TREE.exists():
            shutil.rmtree(VENDOR_TREE)
        staging.rename(VENDOR_TREE)
        print(f"gpu_pack: {VENDOR_TREE} unpacked from {pack_dir / 'ComfyUI.tar.xz'}")
    return 0


def check_env(pack_dir: Path) -> int:
    """After gpu.sh's install, on the device: are the project's requirements and the carried
    wheels' own met by what this Python sees (its packages and the carried ones)? A project
    requirement that is not met fails; a carried wheel's is reported."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    info = json.loads((pack_dir / "pack.json").read_text())
    major, minor, micro = sys.version_info[:3]
    env = {**MARKER_ENV, "python_version": f"{major}.{minor}", "python_full_version": f"{major}.{minor}.{micro}"}

    def problem(text: str) -> str | None:
        req = Requirement(text)
        name = canon(req.name)
        if name in info["omitted"] or (req.marker and not req.marker.evaluate({**env, "extra": ""})):
            return None
        version = installed_version(req.name)
        if version is None:
            return f"{req} (missing)"
        if name in DEVICE_OWN or req.specifier.contains(Version(version), prereleases=True):
            return None
        return f"{req} (found {version})"

    failed = [p for p in map(problem, info["project"]) if p]
    from importlib import metadata
    warned = [f"{name}: {p}" for name in info["carried"] for p in map(problem, metadata.requires(name) or []) if p]
    for line in warned:
        print(f"gpu_pack: warning: {line}")
    for line in failed:
        print(f"gpu_pack: error: the project needs {line}", file=sys.stderr)
    print(f"gpu_pack: {len(info['project'])} project requirements checked here: "
          f"{len(failed)} not met, {len(warned)} warnings; left out on purpose: {', '.join(info['omitted'])}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu_pack.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", nargs="?", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--device-prepare", nargs=2, type=Path, metavar=("PACK", "WHEELS"),
                        help="on the device: unpack PACK's wheels into WHEELS (with WHEELS/install.txt) and the "
                             "vendored tree")
    parser.add_argument("--check-env", type=Path, metavar="PACK",
                        help="on the device: check what this Python sees against PACK/pack.json")
    args = parser.parse_args(argv)
    if args.device_prepare:
        return device_prepare(*args.device_prepare)
    if args.check_env:
        return check_env(args.check_env)
    dest = args.dest.resolve()
    (dest / "wheels").mkdir(parents=True, exist_ok=True)
    device, source = device_packages()
    print(f"gpu_pack: {len(device)} packages on the device, from {source}")
    top = project_requirements()
    res = Resolution(dest / "wheels", device, venv_versions())
    res.run(top)
    pack(res, top, dest, source)
    check(res, top, dest)
    return report_sizes(res, dest)


if __name__ == "__main__":
    sys.exit(main())
