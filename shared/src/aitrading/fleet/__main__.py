"""`python -m aitrading.fleet run | stop | status`."""

from aitrading.fleet.cli import main

raise SystemExit(main())
