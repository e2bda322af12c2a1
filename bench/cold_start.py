"""One cold start: a fresh process until its first result. Prints ``FIRST_RESULT`` when the first
job's outputs are in hand (the parent times from spawning this process to that line)."""

import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))

from common import WORK, model_free_512  # noqa: E402


def main(mode: str) -> None:
    from embedded import Config, Executor
    config = Config.from_env({"EXECUTION_MODE": mode, "COMFY_WORK_DIR": str(WORK / f"cold-{mode}"),
                              "COMFY_LOG_LEVEL": "WARNING", "COMFY_DISABLE_METADATA": "true"})
    executor = Executor(config).start()
    result = executor.run(model_free_512(0x123456))
    assert result.outputs
    print("FIRST_RESULT", flush=True)
    executor.close()


if __name__ == "__main__":
    main(sys.argv[1])
