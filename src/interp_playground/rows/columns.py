"""Compact columnar files: named numpy arrays in one ``.npz`` whose bytes depend only on its content.

``numpy.savez`` stamps each member with the current time, so the same arrays written twice give
different files; :func:`write_columns` writes the same zip layout (uncompressed ``.npy`` members,
readable with ``numpy.load``) with a fixed timestamp and in the given member order, atomically.
Strings go in as fixed-width byte or unicode arrays and objects as UTF-8 JSON text (:func:`json_column`), so
a file never needs pickle to read. Used for the token ids of the generations (``tokens_{stem}.npz``)
and the per-answer measures (``measures_{stem}.npz``).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..io import PathLike, atomic_write_bytes, to_jsonable

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry


def json_column(obj: Any) -> np.ndarray:
    """``obj`` as a uint8 array of its UTF-8 JSON text (keys sorted; a quarter of a unicode array)."""
    text = json.dumps(to_jsonable(obj), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def read_json_column(array: np.ndarray) -> Any:
    """Inverse of :func:`json_column`."""
    return json.loads(np.asarray(array, dtype=np.uint8).tobytes().decode("utf-8"))


def columns_bytes(columns: Mapping[str, np.ndarray]) -> bytes:
    """The ``.npz`` bytes of ``columns`` (member ``{name}.npy`` per column, in order, stored)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, array in columns.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_columns(path: PathLike, columns: Mapping[str, np.ndarray]) -> Path:
    """Atomically write ``columns`` to ``path`` (see the module docstring)."""
    return atomic_write_bytes(path, columns_bytes(columns))


def read_columns(path: PathLike) -> dict[str, np.ndarray] | None:
    """Every column of a file written by :func:`write_columns`, or None when it is missing or
    unreadable (no pickle is ever loaded)."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError):
        return None


__all__ = ["columns_bytes", "json_column", "read_columns", "read_json_column", "write_columns"]
