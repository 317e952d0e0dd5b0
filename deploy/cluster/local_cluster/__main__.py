"""`python3 -m local_cluster COMMAND`: see cli."""

from .cli import main

raise SystemExit(main())
