#!/usr/bin/env python
"""Full EM evaluation pipeline: generation + judging + summary + plots + report.

A thin wrapper of ``interp-playground eval``; see ``--help`` for the options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from interp_playground.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]], exiting=True))
