"""``python -m modelswap`` runs the CLI."""

import sys

from modelswap.cli import main

sys.exit(main())
