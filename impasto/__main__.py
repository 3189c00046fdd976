"""`python -m impasto ...`: the same as the `impasto` command."""

import sys

from .cli import main

if __name__ == "__main__":  # not when a batch's spawned worker imports this module as __mp_main__
    sys.exit(main())
