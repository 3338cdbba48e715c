"""``python -m fastraft``: the same entry point as the ``fastraft`` console script."""

from .cli import main

raise SystemExit(main())
