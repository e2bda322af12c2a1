"""``python -m embedded.handler``: the RunPod worker's entry point, kept where the image and users
call it; the worker itself lives in ``embedded.worker``."""

from .worker.handler import main

if __name__ == "__main__":
    main()
