"""``python -m bistable`` (and ``torchrun -m bistable``) runs the command line."""

from .cli import main

raise SystemExit(main())
