"""`python -m adapters.cli ...`: the same as the `loraeq` command (the web app's workers run this)."""

from .main import main

raise SystemExit(main())
