"""Pieces shared by the command-line front ends."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from ..errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one-line :class:`UserError` s, not usage dumps, and
    that takes options only as written (no prefix abbreviations: ``--layer`` is not ``--layers``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")
