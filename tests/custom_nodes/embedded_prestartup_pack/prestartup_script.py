"""Runs before ComfyUI imports any node pack, as main.py runs prestartup scripts. With
EMBEDDED_TEST_SLOW_BOOT_S set it also makes the boot that much slower (the tests of a worker that
answers while ComfyUI boots)."""
import os
import time

os.environ["EMBEDDED_TEST_PRESTARTUP"] = "ran before the nodes"
time.sleep(float(os.environ.get("EMBEDDED_TEST_SLOW_BOOT_S") or 0))
