"""Atomic file writes, JSON-lines journals, spreadsheet-safe CSV text and content hashes.

Every stage of the pipeline writes its outputs through these helpers, so a crash or a
Ctrl-C never leaves a half-written file where a finished one is expected.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import UserError

PathLike = str | os.PathLike[str]


def _file_mode() -> int:
    """Mode of a newly created file under the current umask (``mkstemp`` alone gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, numpy scalars, paths and tuples into plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # torch / numpy
        return obj.tolist()
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """Serialise to JSON text (UTF-8, no ASCII escaping, trailing newline)."""
    return json.dumps(to_jsonable(obj), indent=indent, ensure_ascii=False) + "\n"


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as JSON."""
    return atomic_write_text(path, dumps_json(obj, indent=indent))


def read_json(path: PathLike) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def append_jsonl(path: PathLike, records: Iterable[Any]) -> None:
    """Append records to a JSON-lines journal and fsync, so that finished work survives a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(to_jsonable(r), ensure_ascii=False) + "\n" for r in records)
    if not lines:
        return
    with open(path, "a+b") as fh:
        # after a crash mid-line, start on a fresh line so the torn record cannot swallow this one
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                lines = "\n" + lines
        fh.write(lines.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: PathLike) -> Iterator[Any]:
    """Yield the records of a JSON-lines journal, skipping a torn line left by a crash (cut JSON, or
    bytes cut inside a multi-byte UTF-8 character, e.g. on a full disk)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                continue
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def check_writable_dir(path: PathLike, option: str = "--output-dir") -> Path:
    """Raise a one-line ``UserError`` unless ``path`` is, or can be created as, a writable folder.

    Walks up to the nearest existing folder (an existing file on the way is an error), checks its
    permissions and probes it with a temporary file that is removed at once; creates nothing.
    """
    given = Path(path)
    probe = Path(os.path.abspath(given))
    while not probe.exists() and not probe.is_symlink() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        if probe == Path(os.path.abspath(given)):
            raise UserError(f"{option} {given} exists and is not a folder")
        raise UserError(f"{option} {given} cannot be created: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{option} {given} is not writable (no write permission on {probe})")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".interp-playground-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UserError(f"{option} {given} is not writable ({exc.strerror or type(exc).__name__} in {probe})") from None
    return given


def text_file_kind(path: PathLike, binary_magic: tuple[bytes, ...] = ()) -> str | None:
    """``"empty"`` or ``"text ('first line' ...)"`` for a file that is empty or UTF-8 text where a binary
    file is expected; None for anything else (a file starting with one of ``binary_magic``, binary
    bytes, an unreadable file)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return None
    if not head:
        return "empty"
    if head.startswith(binary_magic):
        return None
    try:
        first = (head.decode("utf-8").strip() or " ").splitlines()[0]
    except UnicodeDecodeError:
        return None
    return f"text ({first[:40]!r} ...)"


#: A CSV cell starting with one of these is read as a formula by spreadsheet programs.
CSV_FORMULA_STARTS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula.

    Text starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``
    (so ``=HYPERLINK(...)`` shows as text); every other value, numbers included (``-2.0`` stays a
    number), is returned unchanged.
    """
    if isinstance(value, str) and value.startswith(CSV_FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text (LF line ends) of ``header`` and ``rows``, every cell passed through :func:`csv_safe`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_safe(v) for v in header])
    for row in rows:
        writer.writerow([csv_safe(v) for v in row])
    return buf.getvalue()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Hex SHA-256 of UTF-8 text."""
    return sha256_bytes(text.encode("utf-8"))


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def stable_hash(obj: Any) -> str:
    """Short hash of a JSON-serialisable value, independent of dict order."""
    text = json.dumps(to_jsonable(obj), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return sha256_text(text)[:16]


# the user:password@ of a URL (up to its last @ before the path: a password may hold an @)
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s]*@")
# the query string and/or fragment of an http(s) URL: from its first ? or # up to whitespace, a quote or the end
_URL_QUERY = re.compile(r"(https?://[^\s\"'`?#]*)([?#])[^\s\"'`]*", re.IGNORECASE)


def redact_url(text: Any) -> Any:
    """A string as recorded: every URL in it without ``user:password@``, and every http(s) URL's query
    string and fragment replaced by ``?<redacted>`` (or ``#<redacted>`` when the fragment comes first).

    A query may hold a key (``?api_key=sk-...``), so all of it goes, up to the next whitespace or quote
    (over-redacting a trailing ``)`` or ``,`` rather than leaking). The ``?``/``#`` stays to show that
    something was there. Idempotent; text without a URL, and values other than strings, are unchanged.
    """
    if not isinstance(text, str):
        return text
    # credentials first: an unencoded ? or # in a password would otherwise leave its start behind
    return _URL_QUERY.sub(r"\1\2<redacted>", _URL_CREDENTIALS.sub("", text))


def redacted(data: Any) -> Any:
    """``data`` as recorded: no URL credentials, queries or fragments anywhere in it (keys come from the
    environment); see ``redact_url``."""
    if isinstance(data, Mapping):
        return {key: redacted(value) for key, value in data.items()}
    if isinstance(data, list):
        return [redacted(value) for value in data]
    return redact_url(data)
