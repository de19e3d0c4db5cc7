"""``python -m tools.fuzz``: see :mod:`tools.fuzz`."""

import sys

from .cli import main

sys.exit(main())
