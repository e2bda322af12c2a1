"""A node's UI output whose value is one string stays one item: ``{"ui": {"text": "hello"}}`` is one
text, ``["hello"]``, not five (``h``, ``e``...).

ComfyUI merges the UI dicts of a node's calls with ``[y for x in uis for y in x[k]]``
(``execution.get_output_from_returns``), which splits a plain string into its characters; nodes
and packs return all three shapes (a string, a list of strings, a list of dicts). Here each plain
string value is wrapped in a list before that merge, so both backends, and the ``executed``
messages a frontend reads, see one item. ComfyUI's files are not edited: the function is wrapped
in the process that runs ComfyUI (``boot`` in-process; the server-side pack
``server/comfy_nodes/embedded_ui_strings`` loads this file by its path into ComfyUI's server).

Imports only ComfyUI's ``execution``; must not import anything of ``embedded``.
"""

import execution


def _one_item(ui):
    if not isinstance(ui, dict):
        return ui
    return {key: [value] if isinstance(value, str) else value for key, value in ui.items()}


def _ui_strings_kept(return_values, obj, *rest, **kwargs):
    fixed = [{**r, "ui": _one_item(r["ui"])} if isinstance(r, dict) and isinstance(r.get("ui"), dict) else r
             for r in return_values]
    return _comfy_get_output_from_returns(fixed, obj, *rest, **kwargs)


_comfy_get_output_from_returns = execution.get_output_from_returns


def install() -> None:
    """Wrap ``execution.get_output_from_returns`` (once per process)."""
    global _comfy_get_output_from_returns
    current = execution.get_output_from_returns
    if getattr(current, "__name__", "") == _ui_strings_kept.__name__:
        return
    _comfy_get_output_from_returns = current
    execution.get_output_from_returns = _ui_strings_kept
