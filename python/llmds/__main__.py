from llmds.cli import main

raise SystemExit(main())
