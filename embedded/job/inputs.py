"""What a job brings in: the workflow's format and the input images.

Owns: the checks that run before ComfyUI sees anything: the workflow is an API-format object (a
UI-format export gets a "use Export (API)" error); input file names stay inside the job's input
folder and can all exist together; a file named as an image decodes as one (any other file, video,
audio, text..., is taken as it is). Lays out a job's input folder: the static input files
(``COMFY_INPUT_DIRS``) linked in, the job's own files written over them.

Must not import ComfyUI or the backends.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping

from PIL import Image, UnidentifiedImageError

from .errors import InputError, NodeError, ValidationError, WorkflowFormatError

UI_FORMAT_HINT = ("This workflow is in ComfyUI's UI format (it has 'nodes' and 'links'). "
                  "Export it in API format instead: in ComfyUI, use 'Export (API)' "
                  "(Workflow menu > Export (API)) and send that file.")



#: the image formats an input may be in, as users know them (Pillow reads these and more)
READABLE_FORMATS = "PNG, JPEG, WebP, GIF, BMP, TIFF"


def _without_objects(text: str) -> str:
    """An error text without the reprs of in-memory objects (``<_io.BytesIO object at 0x...>``)."""
    return re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>", "the data", text)


def check_workflow(workflow: Any) -> dict[str, Any]:
    """Return the workflow if it looks like API format; raise ``WorkflowFormatError`` otherwise.

    Node-level problems (unknown class, missing inputs, values out of range, a link to a node that
    is not in the workflow) are left to ComfyUI, so that its messages reach the user unchanged and,
    as in ComfyUI, only the outputs that depend on a bad node fail while the others run. Values
    ComfyUI could not even hash (nested too deep, integers beyond 64 bits) are refused here.
    """
    if not isinstance(workflow, dict):
        raise WorkflowFormatError(
            f"The workflow must be a JSON object in ComfyUI's API format, not {type(workflow).__name__}")
    if isinstance(workflow.get("nodes"), list) and "links" in workflow:
        raise WorkflowFormatError(UI_FORMAT_HINT)
    if not workflow:
        raise WorkflowFormatError("The workflow is empty: it has no nodes")
    bad = [str(k) for k, v in workflow.items() if not isinstance(v, dict)]
    if bad:
        raise WorkflowFormatError(
            f"Node {bad[0]} is not an object with 'class_type' and 'inputs'; is this an API-format workflow?"
            + (f" ({len(bad)} such entries)" if len(bad) > 1 else ""))
    unusable = [NodeError(str(node_id), str(node.get("class_type", "?")), "invalid_input_value", problem,
                          input_name=str(name))
                for node_id, node in workflow.items()
                for name, value in (node["inputs"] if isinstance(node.get("inputs"), dict) else {}).items()
                for problem in [_value_problem(value)] if problem]
    if unusable:
        raise ValidationError("Prompt outputs failed validation", "prompt_outputs_failed_validation", unusable)
    return workflow


def check_output_ids(outputs: Any) -> tuple[str, ...] | None:
    """A job's ``outputs`` option (output node ids to run; ``None``: all): a list of ids, as
    strings. Whether each is an output node is checked with the workflow (``check_output_targets``);
    an empty list is ComfyUI's "Prompt has no outputs" when the job is validated."""
    if outputs is None:
        return None
    if isinstance(outputs, (str, bytes)) or not isinstance(outputs, (list, tuple)) \
            or not all(isinstance(o, (str, int)) and not isinstance(o, bool) for o in outputs):
        raise InputError("outputs must be a list of output node ids (strings), e.g. [\"9\"]")
    return tuple(dict.fromkeys(str(o) for o in outputs))


def check_output_targets(workflow: dict[str, Any], outputs: tuple[str, ...] | None,
                         output_node: Callable[[str], bool | None]) -> None:
    """Each id of a job's ``outputs`` is an output node of ``workflow``; ``output_node(class_type)``
    says whether a class is one (None: unknown class, left to ComfyUI's own error). ComfyUI
    ignores ids that are not output nodes; a job is told instead (it asked for something that
    cannot run)."""
    if not outputs:
        return
    bad = []
    for node_id in outputs:
        node = workflow.get(node_id)
        if not isinstance(node, dict):
            bad.append(NodeError(node_id, "?", "output_not_found",
                                 f"Output {node_id} is not a node of the workflow"))
            continue
        class_type = str(node.get("class_type", "?"))
        if output_node(class_type) is False:
            bad.append(NodeError(node_id, class_type, "not_an_output_node",
                                 f"Node {node_id} ({class_type}) is not an output node: only output nodes "
                                 f"(save, preview...) can be chosen in outputs"))
    if bad:
        raise ValidationError("Invalid outputs: only output nodes of the workflow can be run", "invalid_outputs", bad)


#: how deep lists and objects may nest inside one input value (ComfyUI hashes values recursively)
MAX_VALUE_DEPTH = 32
#: integers ComfyUI's INT inputs can hold: signed or unsigned 64-bit
MIN_INT, MAX_INT = -(2 ** 63), 2 ** 64 - 1


def _value_problem(value: Any) -> str | None:
    """Why an input value cannot be handed to ComfyUI (too deep, an integer beyond 64 bits), or None."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and not MIN_INT <= item <= MAX_INT:
            return f"Integer with {item.bit_length()} bits is out of range: inputs take 64-bit integers"
        if isinstance(item, (list, tuple, dict)):
            if depth >= MAX_VALUE_DEPTH:
                return f"Value is nested more than {MAX_VALUE_DEPTH} levels deep"
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return None


#: the flags ComfyUI puts on a list input whose values are files of the input folder
UPLOAD_FLAGS = ("image_upload", "audio_upload", "video_upload")
_ANNOTATIONS = (" [input]", " [output]", " [temp]")


def file_inputs(spec: Any) -> frozenset[str]:
    """The inputs of a node's ``INPUT_TYPES()`` (or ``/object_info`` input) that pick an input file."""
    names = set()
    for section in ("required", "optional"):
        for name, info in ((spec or {}).get(section) or {}).items() if isinstance(spec, dict) else ():
            if isinstance(info, (list, tuple)) and len(info) > 1 and isinstance(info[1], dict) \
                    and any(info[1].get(flag) for flag in UPLOAD_FLAGS):
                names.add(name)
    return frozenset(names)


def check_file_inputs(workflow: dict[str, Any], file_inputs_of: Callable[[str], frozenset[str]]) -> None:
    """Loader inputs (``LoadImage``'s ``image``, ``LoadAudio``'s ``audio``...) name a file inside the
    input folders: an absolute path or ``..`` is a ``ValidationError`` before anything runs."""
    bad = []
    for node_id, node in workflow.items():
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        names = file_inputs_of(str(node.get("class_type"))) if inputs else frozenset()
        for name in names:
            value = inputs.get(name)
            if not isinstance(value, str):
                continue
            plain = next((value[:-len(a)] for a in _ANNOTATIONS if value.endswith(a)), value)
            try:
                check_input_name(plain)
            except InputError as exc:
                bad.append(NodeError(str(node_id), str(node.get("class_type")), "input_file_outside_input_folder",
                                     exc.message.replace("Input name", "File name", 1), input_name=name))
    if bad:
        raise ValidationError("Prompt outputs failed validation", "prompt_outputs_failed_validation", bad)


#: file extensions whose bytes must decode as an image (other inputs, video, audio, masks, text...,
#: are taken as they are: the loader node that reads them says what it thinks of them)
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
#: longest name part and whole name, in UTF-8 bytes (common file-system limits)
MAX_PART_BYTES, MAX_NAME_BYTES = 255, 1024


def check_input_name(name: Any) -> str:
    """A relative POSIX path inside the input folder: not absolute, no ``..``/``.``/empty part, no
    NUL or backslash, each part at most 255 bytes. Spaces, ``~`` and non-ASCII are fine."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"Input name must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise InputError(f"Input name {name!r} contains a NUL character")
    if "\\" in name:
        raise InputError(f"Input name {name!r} contains a backslash; use '/' for sub-folders")
    if name.startswith("/"):
        raise InputError(f"Input name {name!r} is an absolute path; give a name relative to the input folder")
    parts = name.split("/")
    if any(part in ("..", ".", "") for part in parts):
        raise InputError(f"Input name {name!r} contains '..', '.' or '//'; give a plain relative name")
    if len(name.encode()) > MAX_NAME_BYTES or any(len(part.encode()) > MAX_PART_BYTES for part in parts):
        raise InputError(f"Input name {name[:40]!r}... is too long: at most {MAX_PART_BYTES} bytes a part "
                         f"and {MAX_NAME_BYTES} in all")
    return name


def check_names_together(names: list[str]) -> None:
    """Names that cannot all exist in one folder: the same name twice, or one name that is both a
    file and the folder of another (``a`` and ``a/b.png``)."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"Input name {name!r} is given twice")
        seen.add(name)
    folders = {"/".join(name.split("/")[:i]) for name in names for i in range(1, name.count("/") + 1)}
    clash = sorted(seen & folders)
    if clash:
        inner = next(n for n in sorted(seen) if n.startswith(clash[0] + "/"))
        raise InputError(f"Input names {clash[0]!r} and {inner!r} clash: {clash[0]!r} cannot be both a file "
                         f"and a folder")


@dataclass(frozen=True)
class InputLimits:
    """How large one input file may be (``INPUT_MAX_BYTES``) and one input image or video
    (``INPUT_MAX_PIXELS``, width times height times frames)."""

    max_bytes: int = 100 * 1024 * 1024
    max_pixels: int = 100_000_000


def check_input_bytes(name: str, data: Any, limits: InputLimits = InputLimits()) -> bytes | Path:
    """Bytes for an input, or a file holding them (a download), within the size limit; a name with
    an image extension must hold a readable image within the pixel limit, every frame of an
    animated or multi-page image counted, and a video's frames are counted the same way (read from
    their headers: nothing is decoded)."""
    if isinstance(data, Path):
        try:
            size = data.stat().st_size
        except OSError as exc:
            raise InputError(f"Input {name!r} could not be read: {exc.strerror or type(exc).__name__}") from None
    elif isinstance(data, (bytes, bytearray)):
        size = len(data)
    else:
        raise InputError(f"Input {name!r}: expected bytes, got {type(data).__name__}")
    if size > limits.max_bytes:
        raise InputError(f"Input {name!r} is {size} bytes; the limit is {limits.max_bytes} (INPUT_MAX_BYTES)")
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        _check_video_pixels(name, data, limits)
    if suffix in IMAGE_EXTENSIONS:
        try:
            with Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as im:
                width, height = im.size
                frames = int(getattr(im, "n_frames", 1) or 1)  # animated, multi-page: loaders decode every frame
                im.verify()
        except Image.DecompressionBombError:
            pillow = 2 * (Image.MAX_IMAGE_PIXELS or 0)  # where Pillow refuses to open an image
            raise InputError(f"Input {name!r} is larger than Pillow opens ({pillow} pixels); the limit is "
                             f"{min(limits.max_pixels, pillow)} pixels (INPUT_MAX_PIXELS)") from None
        except UnidentifiedImageError:  # Pillow's own words name a BytesIO object, not the input
            raise InputError(f"Input {name!r} is not an image: its bytes are none of the formats read "
                             f"({READABLE_FORMATS}); check that the file, or its base64, is whole") from None
        except (OSError, SyntaxError, ValueError, RecursionError) as exc:
            raise InputError(f"Input {name!r} is not a readable image ({READABLE_FORMATS} are read): "
                             f"{_without_objects(str(exc))}") from None
        if width * height > limits.max_pixels:
            raise InputError(f"Input {name!r} is {width}x{height} pixels; the limit is {limits.max_pixels} "
                             f"pixels (INPUT_MAX_PIXELS)")
        if width * height * frames > limits.max_pixels:
            raise _too_many_pixels(name, frames, width, height, limits)
    return data if isinstance(data, Path) else bytes(data)


#: file extensions ComfyUI's video loaders read, decoding every frame
VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"})


def _too_many_pixels(name: str, frames: int, width: int, height: int, limits: InputLimits) -> InputError:
    return InputError(f"Input {name!r} is {frames} frames of {width}x{height} pixels ({frames * width * height} in "
                      f"all, every frame counted: a loader decodes them all); the limit is {limits.max_pixels} "
                      f"pixels (INPUT_MAX_PIXELS)")


def _check_video_pixels(name: str, data: bytes | Path, limits: InputLimits) -> None:
    """A video's frames times their size, from its container's header (nothing decoded); a file
    PyAV cannot read is left to the loader that reads it."""
    import av

    try:
        with av.open(str(data) if isinstance(data, Path) else io.BytesIO(data)) as container:
            if not container.streams.video:
                return
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            frames = stream.frames
            if not frames and stream.duration and stream.time_base and stream.average_rate:
                frames = int(float(stream.duration * stream.time_base) * float(stream.average_rate)) + 1
    except (av.error.FFmpegError, OSError, ValueError, UnicodeError):
        return
    if frames and width and height and frames * width * height > limits.max_pixels:
        raise _too_many_pixels(name, frames, width, height, limits)


def check_inputs(files: Mapping[str, Any] | None, limits: InputLimits = InputLimits()) -> dict[str, bytes | Path]:
    """Check a job's input files (name -> bytes, or the file holding them) by name, together and
    by content."""
    if files is None:
        return {}
    if not isinstance(files, Mapping):
        raise InputError(f"files must map input names to bytes, got {type(files).__name__}")
    checked = {check_input_name(n): check_input_bytes(n, d, limits) for n, d in files.items()}
    check_names_together(list(checked))
    return checked


def prepare_input_folder(folder: Path, static_dirs: tuple[Path, ...], names: Iterable[str]) -> None:
    """Make ``folder`` show the static input files, with room for the job's own ``names``.

    Each top-level entry of the static folders (first folder first) is linked into ``folder``. A
    job's name replaces the link on its path: a file link is removed, a linked folder is made a
    real folder of links one level down, so that writing the job's file never writes into a
    static folder. The job's file wins for that job only; the static folders are never changed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for static in static_dirs:
        if not static.is_dir():
            continue
        for entry in static.iterdir():
            link = folder / entry.name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(entry, target_is_directory=entry.is_dir())
    for name in names:
        current = folder
        for part in name.split("/")[:-1]:
            current = current / part
            if current.is_symlink():
                target = current.resolve()
                current.unlink()
                current.mkdir()
                if target.is_dir():
                    for entry in target.iterdir():
                        (current / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
        leaf = folder / name
        if leaf.is_symlink():
            leaf.unlink()


def write_inputs(files: Mapping[str, bytes | Path], folder: Path) -> list[Path]:
    """Write checked input files under ``folder`` (a file given by its path is linked when it can
    be, else copied); returns the paths written. A file-system refusal is an ``InputError`` that
    names the input, never the folder."""
    written = []
    root = folder.resolve()
    for name, data in files.items():
        target = root / check_input_name(name)
        if root not in target.parent.resolve().parents and target.parent.resolve() != root:
            raise InputError(f"Input name {name!r} escapes the input folder")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():  # a static file of that name: this job's file replaces the link
                target.unlink()
            if isinstance(data, Path):
                _link_or_copy(data, target)
            else:
                target.write_bytes(data)
        except OSError as exc:
            raise InputError(f"Input {name!r} could not be written: {exc.strerror or type(exc).__name__}") from None
        written.append(target)
    return written


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)
