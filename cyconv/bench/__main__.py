"""``python -m cyconv.bench`` (what the benchmark re-executes itself as)."""

import sys

from .cli import main

sys.exit(main())
