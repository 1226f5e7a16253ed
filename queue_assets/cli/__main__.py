"""`python -m queue_assets.cli`: the same as the `queue-assets` console script."""

import sys

from .app import main

sys.exit(main())
