"""The one exception type that the CLI turns into a one-line error and a non-zero exit."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an unusable environment, explained in one line for the user.

    Raised before any expensive work wherever possible. The CLI prints ``error: <message>``
    and exits with status 2; library callers get an ordinary exception.
    """
