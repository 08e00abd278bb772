from benchmarks.pull.bench import main

raise SystemExit(main())
