"""SQLite cache of judge verdicts, so reruns and repeated answers cost nothing.

A verdict is keyed by a hash of (backend identity, judge model, scoring mode, prompt hash,
allowed labels, question, answer). Every verdict the judge gives (a number, a label, or an
"unscorable" answer) is committed as soon as it arrives, so a killed run resumes where it
stopped; failed calls are not stored, so they are tried again. The database uses WAL journaling
and a busy timeout, so several processes can share one cache file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..errors import UserError
from ..io import PathLike, sha256_text
from .scoring import Score

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    key TEXT PRIMARY KEY,
    score TEXT NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(
    backend: str,
    model: str,
    mode: str,
    prompt_sha256: str,
    question: str,
    answer: str,
    labels: Sequence[str] = (),
) -> str:
    """Hex SHA-256 identifying one judge call's verdict."""
    payload = json.dumps(
        [backend, model, mode, prompt_sha256, list(labels), question, answer],
        ensure_ascii=False, separators=(",", ":"),
    )
    return sha256_text(payload)


def _unusable(path: str, exc: BaseException) -> UserError:
    return UserError(f"judge cache {path} is unusable ({exc}); move it away (its verdicts are lost) or pass "
                     "--judge-cache none / another --judge-cache PATH")


def check_cache_file(path: PathLike | None, what: str = "--judge-cache") -> None:
    """A one-line ``UserError`` when ``path`` exists but is not a readable judge cache (not an SQLite
    database, or a folder); a missing file is fine (it is created when judging starts). Writes nothing."""
    if path is None or str(path) == ":memory:" or not Path(path).expanduser().exists():
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{what} {p} is a folder; give the path of a cache file")
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=60.0)
        try:
            conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise _unusable(str(p), exc) from None


class JudgeCache:
    """A verdict store in one SQLite file (``":memory:"`` for a throwaway cache).

    Use from one thread (the runner's event loop); open one instance per process.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout = 60000")
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise _unusable(self.path, exc) from None

    def get(self, key: str) -> Score | None:
        """The stored verdict for ``key``, or None."""
        row = self._conn.execute("SELECT score FROM verdicts WHERE key = ?", (key,)).fetchone()
        return Score.from_dict(json.loads(row[0])) if row else None

    def get_many(self, keys: Iterable[str]) -> dict[str, Score]:
        """Stored verdicts for those of ``keys`` that are present."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Score] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, text in self._conn.execute(
                f"SELECT key, score FROM verdicts WHERE key IN ({marks})", chunk
            ):
                found[key] = Score.from_dict(json.loads(text))
        return found

    def put(self, key: str, score: Score, backend: str = "", model: str = "") -> None:
        """Store a verdict and commit at once. Failed calls (``score.failed``) are ignored."""
        self.put_many({key: score}, backend=backend, model=model)

    def put_many(self, scores: Mapping[str, Score], backend: str = "", model: str = "") -> None:
        """Store several verdicts in one transaction (failed calls are skipped)."""
        rows = [
            (key, json.dumps(score.to_dict(), ensure_ascii=False), backend, model, time.time())
            for key, score in scores.items() if not score.failed
        ]
        if not rows:
            return
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "INSERT OR REPLACE INTO verdicts (key, score, backend, model, created) VALUES (?, ?, ?, ?, ?)",
                rows,
            )

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> JudgeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
