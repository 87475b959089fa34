"""`python -m tfbert COMMAND ...`: the `tfbert` command, e.g. `python -m tfbert serve ...`."""

import sys

from tfbert.cli import main

if __name__ == "__main__":
    sys.exit(main())
