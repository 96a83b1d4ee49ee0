"""``python -m stacklab_python --addr … --control-url … --token-stdin [--config FILE]``."""

import sys

from .server import main

sys.exit(main())
