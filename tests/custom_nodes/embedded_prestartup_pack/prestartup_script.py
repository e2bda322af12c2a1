"""Runs before ComfyUI imports any node pack, as main.py runs prestartup scripts."""
import os

os.environ["EMBEDDED_TEST_PRESTARTUP"] = "ran before the nodes"
