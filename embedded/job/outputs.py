"""What a job brings out: ComfyUI's UI outputs turned into ``Output`` objects with their bytes.

Owns: which UI-output keys hold files (any list of ``{"filename", "type"}`` dicts: ``images``,
``audio``, ``gifs``, ``video``...), which hold text (``text``: one output per item, a string as it
is, another value as JSON), each output's kind and MIME type,
and reading the files safely from the folder of their type.

Must not import ComfyUI or the backends: they hand over the UI outputs and a way to read a file.
"""

from __future__ import annotations

import json
import mimetypes
import re
from typing import Any, Callable, Iterable, Mapping

from .types import AUDIO, FILE, IMAGE, TEXT, VIDEO, Output

# ComfyUI writes these; the stdlib table lacks some on minimal systems.
_EXTRA_MIME = {".webp": "image/webp", ".webm": "video/webm", ".mp4": "video/mp4", ".flac": "audio/flac",
               ".opus": "audio/opus", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".wav": "audio/wav",
               ".gif": "image/gif", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".latent": "application/octet-stream", ".safetensors": "application/octet-stream",
               ".glb": "model/gltf-binary", ".txt": "text/plain", ".json": "application/json"}

#: reads (type, subfolder, filename) -> bytes; raises OSError/ValueError when it cannot
FileReader = Callable[[str, str, str], bytes]


def mime_type(filename: str) -> str:
    dot = filename.rfind(".")
    ext = filename[dot:].lower() if dot >= 0 else ""
    return _EXTRA_MIME.get(ext) or mimetypes.guess_type(filename)[0] or "application/octet-stream"


def kind_of(key: str, mime: str) -> str:
    top = mime.split("/", 1)[0]
    if top == "video" or key in ("gifs", "video", "videos"):
        return VIDEO
    if top == "audio" or key == "audio":
        return AUDIO
    if top == "image":
        return IMAGE
    if top == "text":
        return TEXT
    return FILE


def _is_file_ref(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("filename"), str) and "type" in item


def collect(ui_outputs: dict[str, dict[str, Any]], read: FileReader,
            types: Iterable[str] = ("output", "temp"), order: Iterable[str] = (),
            kept: Callable[[str], Mapping[tuple[str, str, str], bytes] | None] | None = None,
            ) -> tuple[list[Output], list[str]]:
    """Every output of ``ui_outputs`` (node id -> UI dict) with its bytes.

    ``kept(node_id)`` gives the files kept for a node that ComfyUI served from its cache (see
    ``kept.KeptOutputs``): they are read from there, not from the job's folders.

    Outputs come in the order of ``order`` (the workflow's node order), then any other node in
    ComfyUI's order: ComfyUI runs independent output nodes in an order that varies from process
    to process (it iterates a set), and a caller should not see that.

    Returns ``(outputs, problems)``; a file that cannot be read is a problem, not an exception, so
    that one bad file does not lose the others.
    """
    wanted = set(types)
    outputs: list[Output] = []
    problems: list[str] = []
    rank = {node_id: i for i, node_id in enumerate(order)}
    ordered = sorted(ui_outputs.items(), key=lambda item: rank.get(item[0], len(rank)))
    for node_id, ui in ordered:
        if not isinstance(ui, dict):
            continue
        files = kept(node_id) if kept is not None else None
        node_read = read if files is None else _from_kept(files, read)
        animated = bool(any(ui.get("animated") or ()))
        for key, items in ui.items():
            if key == "animated" or not isinstance(items, (list, tuple)):
                continue
            if key == "text":  # strings as they are; other values (dicts, numbers) as JSON
                for index, text in enumerate(items):
                    if not isinstance(text, str):
                        try:
                            text = json.dumps(text, ensure_ascii=False)
                        except (TypeError, ValueError):
                            continue
                    outputs.append(Output(node_id, TEXT, f"{_plain(node_id)}_{index}.txt", "", "output",
                                          "text/plain", text.encode("utf-8"), key=key))
                continue
            for item in items:
                if not _is_file_ref(item) or item["type"] not in wanted:
                    continue
                filename, subfolder, ftype = item["filename"], item.get("subfolder") or "", item["type"]
                try:
                    data = node_read(ftype, subfolder, filename)
                except (OSError, ValueError) as exc:
                    problems.append(f"Node {node_id}: could not read {ftype} file "
                                    f"{(subfolder + '/' if subfolder else '') + filename}: {exc}")
                    continue
                mime = mime_type(filename)
                outputs.append(Output(node_id, kind_of(key, mime), filename, subfolder, ftype, mime, data,
                                      animated=animated, key=key))
    return outputs, problems


def _from_kept(files: Mapping[tuple[str, str, str], bytes], read: FileReader) -> FileReader:
    def read_kept(ftype: str, subfolder: str, filename: str) -> bytes:
        data = files.get((ftype, subfolder, filename))
        return read(ftype, subfolder, filename) if data is None else data
    return read_kept


def _plain(node_id: str) -> str:
    """A node id fit for a file name: no path separators, no leading dots."""
    return re.sub(r"[^\w.-]", "_", str(node_id)).lstrip(".") or "node"
