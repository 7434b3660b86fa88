import sys

from steuops.cli import main

sys.exit(main())
