import sys

from pe_registry.cli import main

sys.exit(main())
