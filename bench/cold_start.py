"""One cold start: a fresh process until its first result, phase by phase. Prints ``PHASE\t<name>\t<s>``
for each phase and ``FIRST_RESULT`` when the first job's outputs are in hand (the parent times
from spawning this process to that line; what is left is the interpreter's own start).

Both modes import the runpod SDK (the worker does); the embedded mode then imports torch and
boots ComfyUI in this process (its boot phases: ComfyUI core, each node pack), the server mode
starts ComfyUI's server (worker-comfyui's way) and waits for its HTTP answer."""

import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))

from common import WORK, model_free_512  # noqa: E402


def phase(name: str, seconds: float) -> None:
    print(f"PHASE\t{name}\t{seconds:.4f}", flush=True)


def main(mode: str) -> None:
    t = time.perf_counter()
    import runpod  # noqa: F401  (the worker imports it; in embedded mode it starts while ComfyUI boots)
    phase("runpod SDK import", time.perf_counter() - t)
    if mode == "embedded":
        t = time.perf_counter()
        import torch  # noqa: F401
        phase("torch import", time.perf_counter() - t)
    t = time.perf_counter()
    from embedded import Config, Executor
    config = Config.from_env({"EXECUTION_MODE": mode, "COMFY_WORK_DIR": str(WORK / f"cold-{mode}"),
                              "COMFY_LOG_LEVEL": "WARNING", "COMFY_DISABLE_METADATA": "true"})
    phase("our package import", time.perf_counter() - t)
    t = time.perf_counter()
    executor = Executor(config).start()
    booted = time.perf_counter() - t
    for name, seconds in executor.boot_info.phases:
        phase(name, seconds)
    phase("boot, other", booted - sum(s for _, s in executor.boot_info.phases))
    t = time.perf_counter()
    result = executor.run(model_free_512(0x123456))
    assert result.outputs
    phase("first job", time.perf_counter() - t)
    print("FIRST_RESULT", flush=True)
    executor.close()


if __name__ == "__main__":
    main(sys.argv[1])
