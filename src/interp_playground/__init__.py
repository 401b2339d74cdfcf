"""interp-playground: activation-steering experiments for emergent-misalignment research."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import UserError
from .models import (
    DEFAULT_MODEL,
    EMBEDDED_MODEL,
    decoder_layers,
    hidden_size,
    load_model_and_tokenizer,
    load_tokenizer,
    num_layers,
)
from .steering import RowSteer, ablate, capture_layers, row_steering, steer, steering_delta

__all__ = [
    "__version__",
    "UserError",
    "DEFAULT_MODEL",
    "EMBEDDED_MODEL",
    "decoder_layers",
    "hidden_size",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "num_layers",
    "RowSteer",
    "ablate",
    "capture_layers",
    "row_steering",
    "steer",
    "steering_delta",
]
