from latentbench.cli import main

raise SystemExit(main())
