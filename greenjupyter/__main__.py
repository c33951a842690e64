"""``python -m greenjupyter``: the greenjupyter command line (see greenjupyter.cli)."""

from .cli import main

raise SystemExit(main())
