"""``python -m lib.serving``: the same as the ``serve`` executable."""

import sys

from lib.serving.server import main

sys.exit(main())
