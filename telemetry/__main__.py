"""``python -m telemetry runs|tail|export|control``: see ``telemetry.cli``."""
import sys

from telemetry.cli import main

sys.exit(main())
