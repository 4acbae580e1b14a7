"""``python -m leadrelay.bench``."""

import sys

from leadrelay.bench.harness import main

sys.exit(main())
