"""Model files with random weights that ComfyUI's real loaders accept: ``python -m embedded.tooling.modelgen``.

No model can be downloaded where this project is built and tested, but ComfyUI detects a model's
architecture from its state-dict keys and shapes, so files generated from ComfyUI's own model
classes, filled from a seeded generator, run the real loader -> CLIPTextEncode -> KSampler ->
VAEDecode -> SaveImage path (see ``shared/reference/test-models.md`` of the project).

Recipes (the file names are what workflows refer to):

- ``tiny-sd3``: a 6 MB SD3-style checkpoint (MMDiT depth 1, 16-channel TAESD, no text encoder:
  only the seed matters) -> ``checkpoints/tiny-sd3.safetensors``;
- ``tiny-sd15``: a 278 MB SD1.5-style checkpoint with a real-size CLIP-L, so the prompt changes
  the image -> ``checkpoints/tiny-sd15.safetensors``;
- ``sd15``: the full SD1.5 architecture (UNet 860 M, CLIP-L, AutoencoderKL), 2.1 GB, for
  benchmarks and GPU runs -> ``checkpoints/sd15-random.safetensors``;
- ``tiny-sd3-split``: the tiny SD3 model as separate files for ``UNETLoader`` + ``CLIPLoader``
  (type ``sd3``) + ``VAELoader`` -> ``diffusion_models/tiny-sd3-unet.safetensors``,
  ``text_encoders/tiny-clip-l.safetensors``, ``vae/tiny-sd3-taesd.safetensors``.

Files are generated once per (recipe, seed, pinned ComfyUI) into a cache folder, named by that
key, with the sha256 of their content beside them; a later run checks the hash and reuses them.
They are linked into the models folder. Needs a booted ComfyUI (this package's rule: only
``embedded/backends/comfy`` imports ComfyUI).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .vendor import sha256_file

RECIPE_VERSION = 1  # bump when a recipe changes what it writes


@dataclass(frozen=True)
class ModelFile:
    kind: str      # ComfyUI model folder: checkpoints, diffusion_models, text_encoders, vae
    filename: str


RECIPES: dict[str, tuple[ModelFile, ...]] = {
    "tiny-sd3": (ModelFile("checkpoints", "tiny-sd3.safetensors"),),
    "tiny-sd15": (ModelFile("checkpoints", "tiny-sd15.safetensors"),),
    "sd15": (ModelFile("checkpoints", "sd15-random.safetensors"),),
    "tiny-sd3-split": (ModelFile("diffusion_models", "tiny-sd3-unet.safetensors"),
                       ModelFile("text_encoders", "tiny-clip-l.safetensors"),
                       ModelFile("vae", "tiny-sd3-taesd.safetensors")),
}


# --- filling weights ---------------------------------------------------------------------------------

def _fill(module, seed: int) -> None:
    """Every parameter from a seeded generator: matrices and convolutions N(0, 1/sqrt(fan_in)),
    embeddings N(0, 0.02), biases 0, norm weights 1. Nothing is left uninitialised."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters(), key=lambda item: item[0]):
            lower = name.lower()
            if "embedding" in lower and param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
            elif param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) / (param[0].numel() ** 0.5))
            elif lower.endswith("bias"):
                param.zero_()
            elif "norm" in lower or lower.endswith(".weight") or lower.endswith("scale"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)


def _to_file_dtype(state_dict: dict) -> dict:
    """fp16, except ``vae_scale``/``vae_shift`` (fp32, or the pixels differ)."""
    import torch

    out = {}
    for key, value in state_dict.items():
        value = value.detach().contiguous()
        keep = key.endswith(("vae_scale", "vae_shift")) or not value.is_floating_point()
        out[key] = value if keep else value.to(torch.float16)
    return out


def _save(state_dict: dict, path: Path) -> None:
    import comfy.utils

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    comfy.utils.save_torch_file(_to_file_dtype(state_dict), str(tmp))
    tmp.replace(path)


# --- the models ----------------------------------------------------------------------------------------

def _tiny_sd3_model(seed: int):
    import comfy.supported_models as sm

    unet_config = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 1, "input_size": None,
                   "adm_in_channels": 2048, "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [],
                   "context_embedder_config": {"target": "torch.nn.Linear",
                                               "params": {"in_features": 4096, "out_features": 64}}}
    model = sm.SD3(unet_config).get_model({}, "")
    _fill(model.diffusion_model, seed)
    return model


def _taesd(latent_channels: int, scale: float, shift: float, seed: int) -> dict:
    import torch
    import comfy.taesd.taesd

    vae = comfy.taesd.taesd.TAESD(latent_channels=latent_channels)
    _fill(vae, seed)
    with torch.no_grad():
        vae.vae_scale.fill_(scale)
        vae.vae_shift.fill_(shift)
    return dict(vae.state_dict())


def _clip_l(seed: int) -> dict:
    """A CLIP-L text encoder (123 M parameters) as ComfyUI's checkpoint saver names it (``clip_l.*``)."""
    import comfy.sd1_clip

    clip = comfy.sd1_clip.SD1ClipModel(device="cpu")
    _fill(clip, seed)
    return dict(clip.state_dict())


def _tiny_sd3(seed: int) -> dict[str, dict]:
    import torch

    model = _tiny_sd3_model(seed)
    sd = model.state_dict_for_saving(None, _taesd(16, 1.5305, 0.0609, seed + 1))
    # Without any text_encoders.* key, CLIPTextEncode fails with "clip input is invalid: None".
    sd["text_encoders.placeholder"] = torch.zeros(1)
    return {"tiny-sd3.safetensors": sd}


def _sd15_unet_config(tiny: bool) -> dict:
    base = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
            "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
            "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
            "use_temporal_attention": False, "use_temporal_resblock": False}
    if tiny:
        return {**base, "num_res_blocks": [1], "channel_mult": [1], "transformer_depth": [1],
                "transformer_depth_output": [0, 0], "transformer_depth_middle": -2}
    return {**base, "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
            "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
            "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]}


def _sd15(seed: int, tiny: bool) -> dict[str, dict]:
    import comfy.supported_models as sm

    model = sm.SD15(_sd15_unet_config(tiny)).get_model({}, "")
    _fill(model.diffusion_model, seed)
    if tiny:
        vae_sd = _taesd(4, 0.18215, 0.0, seed + 1)
    else:
        import comfy.ldm.models.autoencoder
        ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
        vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
        _fill(vae, seed + 1)
        vae_sd = dict(vae.state_dict())
    sd = model.state_dict_for_saving(_clip_l(seed + 2), vae_sd)
    return {("tiny-sd15.safetensors" if tiny else "sd15-random.safetensors"): sd}


def _tiny_sd3_split(seed: int) -> dict[str, dict]:
    from comfy.text_encoders import sd3_clip  # noqa: F401  (CLIPLoader's sd3 type reads clip_l keys)

    model = _tiny_sd3_model(seed)
    unet = dict(model.diffusion_model.state_dict())
    clip = {k[len("clip_l.transformer."):]: v for k, v in _clip_l(seed + 2).items()
            if k.startswith("clip_l.transformer.")}
    vae = _taesd(16, 1.5305, 0.0609, seed + 1)
    return {"tiny-sd3-unet.safetensors": unet, "tiny-clip-l.safetensors": clip, "tiny-sd3-taesd.safetensors": vae}


_BUILDERS: dict[str, Callable[[int], dict[str, dict]]] = {
    "tiny-sd3": _tiny_sd3,
    "tiny-sd15": lambda seed: _sd15(seed, tiny=True),
    "sd15": lambda seed: _sd15(seed, tiny=False),
    "tiny-sd3-split": _tiny_sd3_split,
}


# --- cache and install -----------------------------------------------------------------------------------

def _cache_key(name: str, seed: int) -> str:
    import comfyui_version

    spec = json.dumps({"recipe": name, "seed": seed, "version": RECIPE_VERSION,
                       "comfyui": comfyui_version.__version__}, sort_keys=True)
    return f"{name}-s{seed}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def ensure(name: str, cache_dir: Path, seed: int = 0, log=print) -> dict[str, Path]:
    """The recipe's files in the cache (generated unless present with their recorded hash)."""
    if name not in RECIPES:
        raise ValueError(f"unknown model recipe {name!r}; choose from {', '.join(RECIPES)}")
    folder = cache_dir / _cache_key(name, seed)
    manifest = folder / "sha256.json"
    files = {f.filename: folder / f.filename for f in RECIPES[name]}
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        if all(path.is_file() and recorded.get(fn) == sha256_file(path) for fn, path in files.items()):
            log(f"modelgen: {name} (seed {seed}) reused from {folder}")
            return files
    started = time.perf_counter()
    state_dicts = _BUILDERS[name](seed)
    for filename, sd in state_dicts.items():
        _save(sd, files[filename])
    manifest.write_text(json.dumps({fn: sha256_file(path) for fn, path in files.items()}, indent=1))
    size = sum(p.stat().st_size for p in files.values())
    log(f"modelgen: {name} (seed {seed}) generated in {time.perf_counter() - started:.1f} s, "
        f"{size / 1e6:.0f} MB, in {folder}")
    return files


def install(name: str, models_dir: Path, cache_dir: Path, seed: int = 0, log=print) -> dict[str, str]:
    """Generate (or reuse) the recipe and link its files into ``models_dir/<kind>/``.

    Returns ``{kind: filename}`` as workflows refer to them.
    """
    files = ensure(name, cache_dir, seed, log)
    installed = {}
    for model_file in RECIPES[name]:
        target = models_dir / model_file.kind / model_file.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        source = files[model_file.filename].resolve()
        if target.is_symlink() or target.exists():
            if target.resolve() == source:
                installed[model_file.kind] = model_file.filename
                continue
            target.unlink()
        os.symlink(source, target)
        installed[model_file.kind] = model_file.filename
    return installed


def default_cache_dir() -> Path:
    from ..config import REPO_ROOT
    return Path(os.environ.get("EMBEDDED_MODEL_CACHE") or REPO_ROOT / "work" / "model-cache")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedded.tooling.modelgen",
                                     description="Write random-weight model files that ComfyUI's loaders accept.")
    parser.add_argument("recipes", nargs="+", choices=sorted(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models-dir", type=Path, default=None, help="default: COMFY_MODELS_DIR")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: EMBEDDED_MODEL_CACHE or work/model-cache")
    args = parser.parse_args(argv)
    os.environ.setdefault("COMFY_LOG_LEVEL", "WARNING")
    from ..api import Executor
    from ..config import Config

    config = Config.from_env()
    Executor(config).start()  # boots ComfyUI: the recipes use its model classes
    models_dir = args.models_dir or config.models
    for recipe in args.recipes:
        installed = install(recipe, models_dir, args.cache_dir or default_cache_dir(), args.seed)
        for kind, filename in installed.items():
            print(models_dir / kind / filename)
    return 0


if __name__ == "__main__":
    sys.exit(main())
