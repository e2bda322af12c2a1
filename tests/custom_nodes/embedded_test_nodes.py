"""Test-only ComfyUI nodes, one per behaviour the tests pin. Loaded through the custom-nodes
configuration (an extra_model_paths.yaml with ``custom_nodes``), as a user's custom nodes are."""

import asyncio
import os
import time

import torch

import comfy.model_management
import comfy.utils
import folder_paths
import nodes
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


class EmbeddedTestBlock:
    """Blocks for ``seconds`` without ever checking ComfyUI's interrupt flag (a node calling a
    library that cannot be stopped)."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3600.0})}}

    def run(self, image, seconds):
        time.sleep(seconds)
        return (image,)


class EmbeddedTestAsyncWait:
    """An async node that awaits ``seconds`` without checking the interrupt flag."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3600.0})}}

    async def run(self, image, seconds):
        await asyncio.sleep(seconds)
        return (image,)


class EmbeddedTestAsyncWriter:
    """An async node that starts a background task and returns at once; ``delay`` seconds later
    the task writes ``<output folder>/<name>`` (wherever ComfyUI's output folder is then)."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "delay": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 60.0}),
                             "name": ("STRING", {"default": "late.txt"})}}

    async def run(self, image, delay, name):
        async def write_later():
            await asyncio.sleep(delay)
            with open(os.path.join(folder_paths.get_output_directory(), name), "w") as fh:
                fh.write("written after its job")

        asyncio.get_running_loop().create_task(write_later())
        return (image,)


#: memory EmbeddedTestHoard keeps (a leak, as a buggy pack has one); "release" empties it
_HOARD: list[bytearray] = []


class EmbeddedTestHoard:
    """Keeps ``megabytes`` of memory alive after its job (or, with ``release``, frees the hoard)."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "megabytes": ("INT", {"default": 64, "min": 0, "max": 4096}),
                             "release": ("BOOLEAN", {"default": False})}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # run every time

    def run(self, image, megabytes, release):
        if release:
            _HOARD.clear()
        else:
            block = bytearray(megabytes * 1024 * 1024)
            block[::4096] = b"x" * len(block[::4096])  # touch every page: resident, not just reserved
            _HOARD.append(block)
        return (image,)


class EmbeddedTestHook:
    """Wraps ``comfy.model_management.cast_to`` as some packs do (ComfyUI restores it between prompts)."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def run(self, image):
        original = comfy.model_management.cast_to

        def hooked(*args, **kwargs):
            return original(*args, **kwargs)

        hooked.embedded_test_hook = True
        comfy.model_management.cast_to = hooked
        return (image,)


class EmbeddedTestSaveAndPass(nodes.SaveImage):
    """Saves its images as SaveImage does and passes them on: an output node early in a chain."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    def run(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        saved = self.save_images(images, filename_prefix, prompt, extra_pnginfo)
        return {"ui": saved["ui"], "result": (images,)}


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
    """Emits, as text, the Comfy.org API key ComfyUI hands to API nodes (test keys only); with
    ``fail``, raises instead."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {"fail": ("BOOLEAN", {"default": False})},
                "hidden": {"api_key": "API_KEY_COMFY_ORG"}}

    def run(self, fail=False, api_key=None):
        if fail:  # as an API node whose service refused: ComfyUI reports its inputs, the key among them
            raise RuntimeError("the service refused the request")
        return {"ui": {"text": [f"api_key={api_key}"]}}


class EmbeddedTestPreviewThenWait:
    """Reports one step of four with a red preview (as a sampler does), then waits until the file
    ``gate`` exists (checking the interrupt flag, at most 120 s), then passes its image on."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "gate": ("STRING", {"default": ""})}}

    def run(self, image, gate):
        from PIL import Image

        bar = comfy.utils.ProgressBar(4)
        bar.update_absolute(1, 4, ("JPEG", Image.new("RGB", (64, 48), (255, 0, 0)), 512))
        until = time.monotonic() + 120
        while not os.path.exists(gate) and time.monotonic() < until:
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(0.02)
        bar.update_absolute(4, 4)
        return (image,)


class EmbeddedTestGatedValidation:
    """Its validation waits until the file ``gate`` exists (writing ``<gate>.waiting`` first, at
    most 60 s), then refuses the node: a workflow whose refusal the test holds."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"gate": ("STRING", {"default": ""})}}

    @classmethod
    def VALIDATE_INPUTS(cls, gate):
        with open(gate + ".waiting", "w"):
            pass
        until = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < until:
            time.sleep(0.02)
        return "the gate said no"

    def run(self, gate):
        return {"ui": {"text": ["never"]}}


class EmbeddedTestWhere:
    """An output node that says which process ran it and what it saw: ``pid``, the job's input
    folder's files, ``CUDA_VISIBLE_DEVICES`` and whether ComfyUI runs on the CPU.

    With a ``folder``, it first writes its pid to ``folder/tag``, then waits (checking the interrupt
    flag) until a file named by each of ``wait_for`` (comma-separated) is there too: jobs that meet
    this way ran at once, whatever the machine's speed (it gives up after 120 s); then it sleeps
    ``seconds``, checking the interrupt flag."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tag": ("STRING", {"default": ""}),
                             "folder": ("STRING", {"default": ""}),
                             "wait_for": ("STRING", {"default": ""}),
                             "seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0})}}

    def run(self, tag, folder, wait_for, seconds):
        import json
        import os
        from pathlib import Path

        import folder_paths

        if folder:
            (Path(folder) / f"{tag}.tmp").write_text(str(os.getpid()))
            os.replace(Path(folder) / f"{tag}.tmp", Path(folder) / tag)
            others = [Path(folder) / name for name in wait_for.split(",") if name]
            give_up = time.monotonic() + 120
            while not all(p.exists() for p in others):
                comfy.model_management.throw_exception_if_processing_interrupted()
                if time.monotonic() > give_up:
                    raise TimeoutError(f"{tag}: {wait_for} never came")
                time.sleep(0.02)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(0.02)
        inputs = sorted(os.listdir(folder_paths.get_input_directory()))
        seen = {"pid": os.getpid(), "tag": tag, "inputs": inputs, "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "cpu": comfy.model_management.cpu_state == comfy.model_management.CPUState.CPU}
        return {"ui": {"text": [json.dumps(seen)]}}


class EmbeddedTestExit:
    """Ends its process at once (``os._exit``), as a crashing native library would."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"code": ("INT", {"default": 3, "min": 0, "max": 255})}}

    def run(self, code):
        import os

        os._exit(code)


NODE_CLASS_MAPPINGS = {
    "EmbeddedTestApiKey": EmbeddedTestApiKey,
    "EmbeddedTestAsyncWait": EmbeddedTestAsyncWait,
    "EmbeddedTestAsyncWriter": EmbeddedTestAsyncWriter,
    "EmbeddedTestBlock": EmbeddedTestBlock,
    "EmbeddedTestGatedValidation": EmbeddedTestGatedValidation,
    "EmbeddedTestHoard": EmbeddedTestHoard,
    "EmbeddedTestHook": EmbeddedTestHook,
    "EmbeddedTestPreviewThenWait": EmbeddedTestPreviewThenWait,
    "EmbeddedTestProgress": EmbeddedTestProgress,
    "EmbeddedTestRaise": EmbeddedTestRaise,
    "EmbeddedTestSaveAndPass": EmbeddedTestSaveAndPass,
    "EmbeddedTestSleep": EmbeddedTestSleep,
    "EmbeddedTestWhere": EmbeddedTestWhere,
    "EmbeddedTestExit": EmbeddedTestExit,
    "EmbeddedTestText": EmbeddedTestText,
    "EmbeddedTestTone": EmbeddedTestTone,
}
