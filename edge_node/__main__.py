"""``python -m edge_node`` is the ``edge-relay`` command."""

import sys

from .cli import main

sys.exit(main())
