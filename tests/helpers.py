"""Small helpers shared by the tests: fixture workflows by name, images as bytes, a job through a
worker's handler."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

TESTS = Path(__file__).resolve().parent
WORKFLOWS = TESTS / "fixtures" / "workflows"
CUSTOM_NODES = TESTS / "custom_nodes"
EXAMPLES = TESTS.parent / "examples"


def workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def png_bytes(size=(8, 8), color=(255, 0, 0), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def open_image(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def close_to(pixel, expected, tolerance=1) -> bool:
    """ComfyUI round-trips pixels through float32 and truncates: allow one step per channel."""
    return len(pixel) == len(expected) and all(abs(a - b) <= tolerance for a, b in zip(pixel, expected))


def handle(worker, job_input, job_id: str = "job-1") -> dict:
    """One job through a worker's RunPod handler, in this process."""
    return asyncio.run(worker.handle({"id": job_id, "input": job_input}))


def animated_gif(size: tuple[int, int], frames: int) -> bytes:
    import io

    from PIL import Image
    images = [Image.new("L", size, (i * 40) % 255) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=40)
    return buffer.getvalue()


def probe(module: str, *args: str, env: dict) -> subprocess.Popen:
    """A probe of ``tests/probes/`` in a process of its own (ComfyUI boots once per process)."""
    return subprocess.Popen([sys.executable, "-m", f"tests.probes.{module}", *args], cwd=TESTS.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def probe_reports(running: dict, timeout: float) -> dict:
    """Each probe's JSON report (the last line it printed), by the key it was started under, once
    all of them ended; a probe that failed fails the test with the end of its stderr."""
    reports = {}
    for key, proc in running.items():
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        reports[key] = json.loads(out.strip().splitlines()[-1])
    return reports
