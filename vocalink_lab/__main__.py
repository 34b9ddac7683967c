"""``python -m vocalink_lab``: the same as the ``vocalink`` command."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
