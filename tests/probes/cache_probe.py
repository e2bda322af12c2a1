"""Runs workflows A, A, B, A in both modes with the COMFY_ARGS of its environment and prints, as
JSON, which nodes each run took from ComfyUI's cache: ``{"embedded": [[...], ...], "server": ...}``.

Usage: ``python -m tests.probes.cache_probe WORK_DIR``.
"""

import json
import sys
from pathlib import Path

from embedded import Config, Executor
from embedded.job.events import CachedEvent


def image_workflow(color: int) -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "probe"}}}


def cached_nodes(executor: Executor, workflow: dict) -> list[str]:
    cached: list[str] = []

    def on_event(ev):
        if isinstance(ev, CachedEvent):
            cached.extend(ev.nodes)

    result = executor.run(workflow, on_event=on_event)
    assert result.outputs, "every run saves its image"
    return sorted(cached)


def main() -> None:
    work = Path(sys.argv[1])
    report = {}
    for mode in ("embedded", "server"):
        config = Config.from_env({**__import__("os").environ, "EXECUTION_MODE": mode,
                                  "COMFY_WORK_DIR": str(work / mode), "COMFY_LOG_LEVEL": "WARNING"})
        with Executor(config) as executor:
            report[mode] = [cached_nodes(executor, image_workflow(c)) for c in (1, 1, 2, 1)]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
