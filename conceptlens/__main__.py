"""``python -m conceptlens`` runs the command line."""

import sys

from conceptlens.cli import main

sys.exit(main())
