"""RunPod Hub's files stay in step with the README: every documented variable is an input of
.runpod/hub.json, and .runpod/tests.json runs a model-free job."""

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: variables of the build (the vendor fetch step), not of a running endpoint
BUILD_ONLY = {"COMFYUI_SOURCE"}


def readme_variables() -> set[str]:
    """Every variable a table of the README or the manual (docs/) documents."""
    names = set()
    text = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    for line in text.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


def test_every_documented_variable_is_a_hub_input():
    hub = json.loads((REPO / ".runpod" / "hub.json").read_text())
    keys = [entry["key"] for entry in hub["config"]["env"]]
    assert len(keys) == len(set(keys))
    assert set(keys) == readme_variables() - BUILD_ONLY
    for entry in hub["config"]["env"]:
        assert entry["input"]["type"] in ("string", "number", "boolean") and entry["input"]["description"]


def test_the_hub_cuda_versions_match_the_images_default_base():
    hub = json.loads((REPO / ".runpod" / "hub.json").read_text())
    base = re.search(r"ARG CUDA_IMAGE_TAG=(\d+\.\d+)", (REPO / "Dockerfile").read_text()).group(1)
    assert hub["config"]["allowedCudaVersions"] == [base]


def test_the_hub_test_job_is_the_model_free_test_input():
    tests = json.loads((REPO / ".runpod" / "tests.json").read_text())
    assert tests["tests"][0]["input"] == json.loads((REPO / "test_input.json").read_text())["input"]
    classes = {node["class_type"] for node in tests["tests"][0]["input"]["workflow"].values()}
    assert not any("Loader" in c for c in classes)
