"""Boots ComfyUI with its own packs imported at boot (``EAGER_NODES=true``) or on first use (the
index built beforehand), then, for every workflow of ``tests/fixtures/workflows`` and
``examples``, prints as JSON what a caller can see: the node set, each preflight, and each run's
outputs (their digests) or error.

Usage: ``python -m tests.probes.node_loading_probe WORK_DIR`` (the environment says which way).
"""

import hashlib
import io
import json
import os
import re
import sys
import wave
from pathlib import Path

from embedded import Config, EmbeddedError, Executor

TESTS = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted([*(TESTS / "fixtures" / "workflows").glob("*.json"), *(TESTS.parent / "examples").glob("*.json")])
#: workflows made to never end or to hold memory: their preflight is compared, not a run
NOT_RUN = {"async_node_never_returns", "node_never_checks_interrupt", "leaky_node", "slow_node",
           "async_task_then_sleep"}


def input_files() -> dict[str, bytes]:
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 60)).save(png, format="PNG")
    wav = io.BytesIO()
    with wave.open(wav, "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(8000), out.writeframes(b"\0\1" * 800)
    return {"in.png": png.getvalue(), "input.png": png.getvalue(), "voice.wav": wav.getvalue()}


def fingerprint(output) -> str:
    """Images and text: their bytes; containers (WebM, MP4, FLAC) carry random ids: their size."""
    if output.kind in ("image", "text"):
        return hashlib.sha256(output.data).hexdigest()
    return f"{len(output.data)} bytes"


def dynamo_works() -> list:
    """torchvision's roi_align (which took the stand-in's function) and torch._dynamo itself."""
    import torch
    import torch._dynamo.utils
    import torchvision.ops

    pooled = torchvision.ops.roi_align(torch.rand(1, 1, 8, 8), [torch.tensor([[0.0, 0.0, 4.0, 4.0]])], 2)
    compiled = torch.compile(lambda x: x * 2, backend="eager")(torch.ones(2))
    return [list(pooled.shape), torch._dynamo.utils.is_compile_supported("cpu"), compiled.tolist(),
            type(sys.modules["torch._dynamo.utils"]).__name__, hasattr(sys.modules["torch._dynamo.utils"], "counters")]


def scipy_works() -> list:
    """scipy.stats and scipy.integrate, first used from four threads at once: each runs once, and
    every thread gets the real thing."""
    from concurrent.futures import ThreadPoolExecutor

    def use(i: int):
        import comfy.k_diffusion.sampling as sampling  # took ``from scipy import integrate`` at boot
        import comfy.samplers as samplers  # took ``import scipy.stats`` at boot

        return [round(float(samplers.scipy.stats.beta.ppf(0.5, 0.6, 0.6)), 6),
                round(sampling.integrate.quad(lambda x: x, 0, 1)[0], 6)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(use, range(4)))
    return [results[0], all(r == results[0] for r in results),
            [type(sys.modules[name]).__name__ for name in ("scipy.stats", "scipy.integrate")]]


def modules() -> dict[str, str]:
    import nodes

    return {name: f"{getattr(cls, 'RELATIVE_PYTHON_MODULE', None)} {nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name)}"
            for name, cls in nodes.NODE_CLASS_MAPPINGS.items()}


def node_set() -> list[str]:
    import nodes
    from embedded.backends.comfy import boot

    lazy = boot.lazy_packs()
    return sorted(set(nodes.NODE_CLASS_MAPPINGS) | (lazy.not_loaded() if lazy else set()))


def main() -> None:
    work = Path(sys.argv[1])
    config = Config.from_env({**os.environ, "COMFY_WORK_DIR": str(work), "COMFY_LOG_LEVEL": "ERROR",
                              "COMFY_DISABLE_METADATA": "true", "JOB_STOP_GRACE_S": "2"})
    report = {"lazy": None, "nodes": None, "workflows": {}}
    files = input_files()
    with Executor(config) as executor:
        from embedded.backends.comfy import boot
        from embedded.tooling import modelgen

        report["lazy"] = boot.lazy_packs() is not None
        report["dynamo_after_boot"] = "torch._dynamo" in sys.modules
        report["scipy_after_boot"] = [type(sys.modules.get(name)).__name__ for name in ("scipy.stats", "scipy.integrate")]
        report["scipy_works"] = scipy_works()
        report["nodes"] = node_set()
        for recipe in ("tiny-sd3", "tiny-sd15", "tiny-sd3-split"):  # random weights (ComfyUI booted first)
            modelgen.install(recipe, config.models, modelgen.default_cache_dir(), seed=0, log=lambda *a: None)
        for path in WORKFLOWS:
            workflow = json.loads(path.read_text())
            entry = report["workflows"][path.stem] = {}
            try:
                entry["check"] = executor.check(workflow, files).to_dict()
            except EmbeddedError as exc:
                entry["check"] = f"{type(exc).__name__}: {exc}"
            if path.stem in NOT_RUN:
                continue
            try:
                result = executor.run(workflow, files, timeout=60)
                entry["run"] = [[o.node_id, o.kind, re.sub(r"_temp_[a-z]{5}_", "_temp_", o.filename),  # random
                                 fingerprint(o)] for o in result.outputs]
            except EmbeddedError as exc:
                entry["run"] = f"{type(exc).__name__}: {exc}"
        report["nodes_after"] = node_set()
        # every class registered (a preflight imports what a workflow names): who defines each
        executor.check({str(i): {"class_type": c, "inputs": {}} for i, c in enumerate(report["nodes"])})
        report["modules"] = modules()
        report["import_failures"] = list(executor.boot_info.import_failures)
        report["dynamo_works"] = dynamo_works()
    print(json.dumps(report).replace(str(work), "<work>"))  # the two ways run in two work folders


if __name__ == "__main__":
    main()
