"""``python -m devkit.demo``: the query-mode demo (:mod:`devkit.demo.query`)."""

import sys

from devkit.demo.query import main

sys.exit(main())
