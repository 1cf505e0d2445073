"""``python -m hybridmoo``: the command line (see :mod:`hybridmoo.cli`)."""

from hybridmoo.cli import main

raise SystemExit(main())
