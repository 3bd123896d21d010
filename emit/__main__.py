"""``python -m emit``: the same as the ``emit`` command."""

import sys

from .cli import main

sys.exit(main())
