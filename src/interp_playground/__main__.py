"""``python -m interp_playground ...`` (also how ``torchrun -m interp_playground`` launches it)."""

import sys

from .cli import main

sys.exit(main())
