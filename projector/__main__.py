"""``python -m projector``: the same as the ``projector`` command."""

import sys

from .cli import main

sys.exit(main())
