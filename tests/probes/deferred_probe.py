"""What becomes of the imports the boot deferred: none has run at boot, a job does not run them,
and the runner runs them once it has been idle for a moment after the job. Prints a JSON report."""

import json
import os
import sys
import time

from embedded import Config, Executor
from embedded.backends.comfy import deferred

from ..helpers import workflow


def main() -> None:
    config = Config.from_env({**os.environ, "COMFY_WORK_DIR": sys.argv[1], "COMFY_LOG_LEVEL": "ERROR"})
    report = {}
    with Executor(config) as executor:
        report["after_boot"] = deferred.still_deferred()
        executor.run(workflow("solid_red_image"))
        report["after_a_job"] = deferred.still_deferred()
        until = time.monotonic() + 60
        while deferred.still_deferred() and time.monotonic() < until:
            time.sleep(0.1)
        report["once_idle"] = deferred.still_deferred()
        import comfy.samplers
        report["works"] = round(float(comfy.samplers.scipy.stats.beta.ppf(0.5, 0.6, 0.6)), 6)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
