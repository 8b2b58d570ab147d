import sys

from pe_core.defaults.cli import main

sys.exit(main())
