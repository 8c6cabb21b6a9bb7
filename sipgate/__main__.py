"""``python -m sipgate`` runs the ``sipgate`` command."""

import sys

from sipgate.cli import main

sys.exit(main())
