"""`python -m inferstack.cli ...`: the same as the `inferstack` console script."""

from inferstack.cli import main

raise SystemExit(main())
