"""`python -m simulator`: the `wafersim` command."""

from simulator.cli import main

raise SystemExit(main())
