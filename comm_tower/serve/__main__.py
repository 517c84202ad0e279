"""`python -m comm_tower.serve` = `comm-chat`."""

import sys

from comm_tower.serve.cli import main

sys.exit(main())
