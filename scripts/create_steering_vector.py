#!/usr/bin/env python
"""Create steering vectors (same as `interp-playground vectors`); see --help for the options."""

import sys

import interp_playground.cli

if __name__ == "__main__":
    sys.exit(interp_playground.cli.main(["vectors", *sys.argv[1:]], exiting=True))
