"""`python -m i2vgen ...` (and `torchrun -m i2vgen train ...`): the `i2vgen` command."""

import sys

from i2vgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
