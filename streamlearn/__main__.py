from streamlearn.cli.main import main

raise SystemExit(main())
