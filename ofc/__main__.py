"""``python -m ofc``: the command-line interface (see :mod:`ofc.cli`)."""

import sys

from ofc.cli import main

sys.exit(main())
