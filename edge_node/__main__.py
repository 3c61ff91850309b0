"""``python -m edge_node`` is the ``edge-relay`` command."""

import sys

from edge_node.local.launcher import main

sys.exit(main())
