"""One cold start: a fresh process until its first result, phase by phase, the way the worker
starts (``Worker.start_boot``): ComfyUI's arguments read on the main thread, the backend started
in a background thread (embedded: torch, ComfyUI's core, the node packs in this process; server:
ComfyUI's server started, worker-comfyui's way, and its first HTTP answer awaited) while the main
thread imports the runpod SDK, then the first job. Prints ``PHASE\t<name>\t<s>`` for each phase
(the boot's phases in its thread; the SDK import overlaps them) and ``FIRST_RESULT`` when the
first job's outputs are in hand; the parent times from spawning this process to that line."""

import sys
import threading
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))

from common import WORK, model_free_512  # noqa: E402


def phase(name: str, seconds: float) -> None:
    print(f"PHASE\t{name}\t{seconds:.4f}", flush=True)


def main(mode: str) -> None:
    t = time.perf_counter()
    from embedded import Config, Executor
    config = Config.from_env({"EXECUTION_MODE": mode, "COMFY_WORK_DIR": str(WORK / f"cold-{mode}"),
                              "COMFY_LOG_LEVEL": "WARNING", "COMFY_DISABLE_METADATA": "true"})
    executor = Executor(config).prepare()
    phase("our package import, ComfyUI's arguments", time.perf_counter() - t)
    t = time.perf_counter()
    booting = threading.Thread(target=executor.start)
    booting.start()
    started = time.perf_counter()
    import runpod  # noqa: F401  (the worker imports it while the backend starts)
    phase("runpod SDK import (during the boot)", time.perf_counter() - started)
    booting.join()
    booted = time.perf_counter() - t
    for name, seconds in executor.boot_info.phases:
        phase(f"boot: {name}", seconds)
    phase("boot: other", max(booted - sum(s for _, s in executor.boot_info.phases), 0.0))
    t = time.perf_counter()
    result = executor.run(model_free_512(0x123456))
    assert result.outputs
    phase("first job", time.perf_counter() - t)
    print("FIRST_RESULT", flush=True)
    executor.close()


if __name__ == "__main__":
    main(sys.argv[1])
