import sys

from steuops.cli import run

sys.exit(run())
