"""Pieces shared by the command-line front ends."""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn

from ..errors import UserError

_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one-line :class:`UserError` s, not usage dumps, and
    that takes options only as written (no prefix abbreviations: ``--layer`` is not ``--layers``), and
    negative numbers in any float spelling (``-1e30``, ``-inf``) as values."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        # values such as -inf, -1e30 or -.5 are values, not options (argparse knows only -1 and -1.5)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")
