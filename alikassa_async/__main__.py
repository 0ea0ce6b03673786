"""``python -m alikassa_async ...`` is the ``alikassa`` command."""

import sys

from .cli import main

sys.exit(main())
