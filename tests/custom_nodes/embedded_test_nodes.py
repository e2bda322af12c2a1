"""Test-only ComfyUI nodes, one per behaviour the tests pin. Loaded through the custom-nodes
configuration (an extra_model_paths.yaml with ``custom_nodes``), as a user's custom nodes are."""

import time

import torch

import comfy.model_management
import comfy.utils
from server import PromptServer


class EmbeddedTestProgress:
    """Passes its image through after ``steps`` ProgressBar updates (and one progress text)."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "steps": ("INT", {"default": 5, "min": 1, "max": 1000})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, image, steps, unique_id=None):
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            bar.update(1)
        PromptServer.instance.send_progress_text(f"did {steps} steps", unique_id)
        return (image,)


class EmbeddedTestRaise:
    """Raises ``RuntimeError(message)``."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "message": ("STRING", {"default": "boom"})}}

    def run(self, image, message):
        raise RuntimeError(message)


class EmbeddedTestSleep:
    """Sleeps ``seconds`` in 20 ms steps, checking ComfyUI's interrupt flag at each step."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3600.0})}}

    def run(self, image, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(0.02)
        return (image,)


class EmbeddedTestText:
    """An output node that emits a text output."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hello", "multiline": True})}}

    def run(self, text):
        return {"ui": {"text": [text]}}


class EmbeddedTestTone:
    """A sine tone as ComfyUI AUDIO (no model needed)."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"frequency": ("FLOAT", {"default": 440.0, "min": 1.0, "max": 20000.0}),
                             "seconds": ("FLOAT", {"default": 0.5, "min": 0.01, "max": 60.0}),
                             "sample_rate": ("INT", {"default": 16000, "min": 8000, "max": 96000})}}

    def run(self, frequency, seconds, sample_rate):
        t = torch.arange(int(seconds * sample_rate), dtype=torch.float32) / sample_rate
        wave = 0.5 * torch.sin(2 * torch.pi * frequency * t)
        return ({"waveform": wave.reshape(1, 1, -1), "sample_rate": sample_rate},)


class EmbeddedTestApiKey:
    """Emits, as text, the Comfy.org API key ComfyUI hands to API nodes (test keys only)."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "hidden": {"api_key": "API_KEY_COMFY_ORG"}}

    def run(self, api_key=None):
        return {"ui": {"text": [f"api_key={api_key}"]}}


NODE_CLASS_MAPPINGS = {
    "EmbeddedTestApiKey": EmbeddedTestApiKey,
    "EmbeddedTestProgress": EmbeddedTestProgress,
    "EmbeddedTestRaise": EmbeddedTestRaise,
    "EmbeddedTestSleep": EmbeddedTestSleep,
    "EmbeddedTestText": EmbeddedTestText,
    "EmbeddedTestTone": EmbeddedTestTone,
}
