"""``python -m moevit``: the command line (:mod:`moevit.cli`)."""

import sys

from .cli import main

sys.exit(main())
