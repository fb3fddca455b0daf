"""`python -m deploy`: see deploy.cli."""

from __future__ import annotations

from deploy.cli import main

raise SystemExit(main())
