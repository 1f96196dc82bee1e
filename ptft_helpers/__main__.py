"""``python -m ptft_helpers``: see ``cli.py``."""

from .cli import main

raise SystemExit(main())
