from bounce_exporter.cli import main

raise SystemExit(main())
