"""``python -m pe_core.cli`` (what ``torchrun -m pe_core.cli train ...`` runs)."""

import sys

from pe_core.cli.main import main

sys.exit(main())
