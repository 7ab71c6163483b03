"""``python -m newton_losses`` — kept as an alias of ``python -m newton_lab`` (the command line
lives in the harness package :mod:`newton_lab`, which depends on this library, not the other way).
``import newton_losses`` never loads this module."""
from newton_lab.cli import main

raise SystemExit(main())
