"""``python -m srcli``."""

import sys

from srcli.cli import main

sys.exit(main())
