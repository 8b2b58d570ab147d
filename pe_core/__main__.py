import sys

from pe_core.cli.main import main

sys.exit(main())
