"""Runs before ComfyUI imports any node pack, as main.py runs prestartup scripts. With
EMBEDDED_TEST_SLOW_BOOT_S set it also makes the boot that much slower (the tests of a worker that
answers while ComfyUI boots); with EMBEDDED_TEST_BOOT_GATE set to a file's path, the boot waits
until that file exists (at most 5 minutes), and fails (as a pack that calls sys.exit) when the file
says "fail"."""
import os
import time

os.environ["EMBEDDED_TEST_PRESTARTUP"] = "ran before the nodes"
time.sleep(float(os.environ.get("EMBEDDED_TEST_SLOW_BOOT_S") or 0))

_gate = os.environ.get("EMBEDDED_TEST_BOOT_GATE")
if _gate:
    _until = time.monotonic() + 300
    while not os.path.exists(_gate) and time.monotonic() < _until:
        time.sleep(0.05)
    with open(_gate) as _said:
        if _said.read().strip() == "fail":
            raise SystemExit("the test asked this boot to fail")
