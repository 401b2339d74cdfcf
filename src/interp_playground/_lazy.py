"""Lazy exports: a package's public names, each imported from its module on first use, so importing
the package stays cheap (no torch until a name needs it)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps a public name to its module, relative
    to the package (``"api"``, or ``"..settings.judge"`` outside it), with ``":attr"`` where the
    module's name for it differs. A resolved name is stored in ``namespace`` (the package's globals)."""

    def __getattr__(name: str) -> Any:
        entry = exports.get(name)
        if entry is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = entry.partition(":")
        value = getattr(importlib.import_module(module if module.startswith(".") else f".{module}", package),
                        attr or name)
        namespace[name] = value
        return value

    return __getattr__
