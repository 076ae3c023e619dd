"""`python -m emotivoice.app ...`: the same command as the `emotivoice` script."""

from emotivoice.app.cli import main

raise SystemExit(main())
