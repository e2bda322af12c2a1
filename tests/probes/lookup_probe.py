"""Runs one workflow case (``expansion``, ``lookup`` or ``import``) as the first job of a fresh
process, with ComfyUI's own packs imported on first use (the index built beforehand) or at boot
(``EAGER_NODES=true``), and prints the outcome as JSON: ``{"lazy", "ok", "error", "outputs"}``.

Usage: ``python -m tests.probes.lookup_probe WORK_DIR CASE``.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

from embedded import Config, EmbeddedError, Executor

from ..helpers import CUSTOM_NODES

IMAGE = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 99}}
CASES = {
    "expansion": {"1": IMAGE, "2": {"class_type": "EmbeddedExpandsToBuiltin", "inputs": {"image": ["1", 0]}},
                  "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}},
    "lookup": {"1": IMAGE, "2": {"class_type": "EmbeddedLooksUpBuiltins", "inputs": {"image": ["1", 0]}},
               "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}},
    "import": {"1": {"class_type": "EmbeddedServerProbe", "inputs": {"label": "import"}}},
}


def main() -> None:
    work, case = Path(sys.argv[1]), sys.argv[2]
    paths = work / "paths.yaml"
    paths.write_text(f"tests:\n  custom_nodes: {CUSTOM_NODES}\n")
    config = Config.from_env({**os.environ, "COMFY_WORK_DIR": str(work), "COMFY_EXTRA_MODEL_PATHS": str(paths),
                              "COMFY_LOG_LEVEL": "ERROR", "COMFY_DISABLE_METADATA": "true"})
    report = {}
    with Executor(config) as executor:
        report["lazy"] = "ComfyUI's own packs: on first use" in dict(executor.boot_info.phases)
        try:
            result = executor.run(CASES[case])
            report.update(ok=True, error=None, outputs=[
                [o.node_id, o.kind, o.text if o.kind == "text" else hashlib.sha256(o.data).hexdigest()]
                for o in result.outputs])
        except EmbeddedError as exc:
            report.update(ok=False, error=str(exc), outputs=[])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
