"""Steered generation, as the seed's ``generate_steered`` module (a thin re-export).

``from generate_steered import generate_with_steering, generate_baseline, load_steering_vector``
works from the repository root as in the original project; the code lives in
:mod:`interp_playground.seed_api` (on the batched engine) and :mod:`interp_playground.activations`.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import interp_playground  # noqa: F401
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from interp_playground.activations import load_steering_vector  # noqa: E402
from interp_playground.seed_api import generate_baseline, generate_with_steering  # noqa: E402

__all__ = ["generate_with_steering", "generate_baseline", "load_steering_vector"]
