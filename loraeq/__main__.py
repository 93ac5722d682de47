"""`python -m loraeq ...`: the same as the `loraeq` command (the web app's workers run this)."""

from adapters.runtime import die_with_parent

from .main import main

die_with_parent()  # a worker of the web app ends with the app
raise SystemExit(main())
