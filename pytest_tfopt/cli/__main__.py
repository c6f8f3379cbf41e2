"""``python -m pytest_tfopt.cli``: the ``tfopt`` command."""

import sys

from . import main

sys.exit(main())
