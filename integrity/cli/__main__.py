from integrity.cli.main import main

raise SystemExit(main())
