from torchcls.cli import main

raise SystemExit(main())
