from newton_lab.cli import main

raise SystemExit(main())
