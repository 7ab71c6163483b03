"""``python -m newton_losses`` — kept as an alias of ``python -m newton_lab``, the command line of
the harness (the distribution newton-losses-lab, which depends on this library, not the other
way). ``import newton_losses`` never loads this module."""
import sys

try:
    from newton_lab.cli import main
except ImportError as exc:  # the library installed without the harness
    sys.exit(f"python -m newton_losses: the command line is part of the experiment harness, "
             f"newton-losses-lab, which is not installed ({exc}); from the repository: "
             f"pip install -e ./lab")

raise SystemExit(main())
