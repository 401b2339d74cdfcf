"""Pieces shared by the command-line front ends."""

from __future__ import annotations

import argparse
from typing import NoReturn

from ..errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one-line :class:`UserError` s, not usage dumps."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")
