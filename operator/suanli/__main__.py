"""Entry point for ``python -m suanli``."""

from suanli.cli import main

raise SystemExit(main())
