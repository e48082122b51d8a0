"""``python -m bsrnn`` is the same as the ``bsrnn`` command."""

from bsrnn.cli.main import main

raise SystemExit(main())
