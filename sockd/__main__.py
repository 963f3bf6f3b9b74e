"""`python -m sockd` runs the server, exactly like the `sockd` command."""

import sys

from sockd.cli import main

sys.exit(main())
