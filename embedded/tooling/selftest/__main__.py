"""``python -m embedded.tooling.selftest``: the self-test's command line (see ``command.py``)."""

import sys

from .command import cli

sys.exit(cli())
