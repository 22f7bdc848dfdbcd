"""``python -m sklearn_cmim <command> [options]``: the ``cmim`` command, for environments whose
scripts folder is not on ``PATH``."""

import sys

from .cli import main

sys.exit(main())
