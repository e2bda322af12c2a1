"""``python -m embedded.worker``: start the RunPod worker (same as ``python -m embedded.handler``)."""

from .handler import main

main()
