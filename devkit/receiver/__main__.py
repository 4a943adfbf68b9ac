"""``python -m devkit.receiver``: run the reference receiver (see :mod:`devkit.receiver.cli`)."""

from devkit.receiver.cli import main

raise SystemExit(main())
