"""``python -m crossrank`` runs the command line."""

from crossrank.cli import main

raise SystemExit(main())
