"""Scripts the tests run in a process of their own (ComfyUI's arguments are parsed once per process)."""
