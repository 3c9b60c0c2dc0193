"""`python -m i2vgen.cli ...`: the `i2vgen` command."""

import sys

from i2vgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
