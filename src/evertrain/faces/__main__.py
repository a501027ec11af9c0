"""``python -m evertrain.faces``: the command line, as the ``evertrain`` script runs it."""

import sys

from evertrain.faces.cli import main

sys.exit(main())
