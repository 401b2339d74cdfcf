"""The generated token ids of a run's answers, stored compactly beside the generation files.

The engines return every answer's generated ids (``GenerationRow.token_ids``: the ids before the
first end token, plus that end token when the answer ended with one). The generation journal
keeps them per row as base64 of little-endian int32 (:func:`encode_ids`; a resumed sweep needs
them), and when a condition's ``generations_{stem}.json`` is written, ``tokens_{stem}.npz``
(:mod:`interp_playground.rows.columns`) gets the same rows in the same order: ``question_id``,
``answer_idx``, ``answer`` (the hash of the row's text, so ids never attach to an answer that was
edited or generated again), ``offsets`` (``[n + 1]``) and ``ids`` (all rows' ids, concatenated).

The prompt ids are not stored: both engines build them with
:func:`interp_playground.chat.prompt_ids` from the question, the tokenizer's chat template and the
run's ``thinking`` setting (all recorded in ``config.json``), so the measures rebuild them exactly.
A run made before the ids were kept has no tokens files; its answers are measured on their text.
No torch is imported here.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import RunDir
from .columns import json_column, read_columns, read_json_column, write_columns
from .join import RowKey, answer_hash, keyed_rows

TOKENS_FILE_FORMAT = "interp_playground.tokens/1"
#: The journal field holding a row's ids (:func:`encode_ids`).
IDS_FIELD = "ids"


def encode_ids(ids: Sequence[int]) -> str:
    """``ids`` as base64 of little-endian int32 (a JSON string a third the size of a list)."""
    return base64.b64encode(np.asarray(list(ids), dtype="<i4").tobytes()).decode("ascii")


def decode_ids(text: str) -> list[int]:
    """Inverse of :func:`encode_ids`."""
    return np.frombuffer(base64.b64decode(text), dtype="<i4").astype(np.int64).tolist()


def write_tokens(run: RunDir, stem: str, rows: Sequence[Mapping[str, Any]], ids: Sequence[Sequence[int]]) -> Path:
    """Write ``tokens_{stem}.npz`` for a condition file's ``rows`` (as written, in order) and their ids."""
    keyed = keyed_rows(rows, stem)
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1]))
    return write_columns(run.tokens(stem), {
        "meta": json_column({"format": TOKENS_FILE_FORMAT, "condition": stem}),
        "question_id": np.array([r["question_id"] for r in keyed], dtype=np.int32),
        "answer_idx": np.array([r["answer_idx"] for r in keyed], dtype=np.int32),
        "answer": np.array([answer_hash(r.get("question"), r.get("response")) for r in keyed], dtype="S16"),
        "offsets": offsets,
        "ids": flat,
    })


def read_tokens(run: RunDir, stem: str) -> dict[RowKey, tuple[str, list[int]]]:
    """``{(stem, question_id, answer_idx): (text hash, ids)}`` of ``tokens_{stem}.npz`` (empty when the
    file is missing or unreadable: the answers are then measured on their text)."""
    cols = read_columns(run.tokens(stem))
    if cols is None or not {"meta", "question_id", "answer_idx", "answer", "offsets", "ids"} <= set(cols):
        return {}
    try:
        if read_json_column(cols["meta"]).get("format") != TOKENS_FILE_FORMAT:
            return {}
    except ValueError:
        return {}
    offsets, flat = cols["offsets"].tolist(), cols["ids"]
    n = len(cols["question_id"])
    if not (len(cols["answer_idx"]) == len(cols["answer"]) == n == len(offsets) - 1 and offsets[0] == 0
            and offsets[-1] == len(flat) and all(a <= b for a, b in zip(offsets, offsets[1:], strict=False))):
        return {}  # a damaged file: measured on the text, as a run without ids
    out: dict[RowKey, tuple[str, list[int]]] = {}
    for i, (qid, aidx, text) in enumerate(zip(cols["question_id"].tolist(), cols["answer_idx"].tolist(),
                                               cols["answer"].tolist(), strict=True)):
        text = text.decode("ascii") if isinstance(text, bytes) else str(text)
        out[(stem, int(qid), int(aidx))] = (text, flat[offsets[i]:offsets[i + 1]].tolist())
    return out


def attach_token_ids(rows: Sequence[Mapping[str, Any]], tokens: Mapping[RowKey, tuple[str, list[int]]]
                     ) -> list[dict[str, Any]]:
    """Keyed rows (copies) with ``token_ids`` set from ``tokens`` where the stored ids were made for
    the row's text, else None (the row is then measured on its text)."""
    out = []
    for row in rows:
        r = dict(row)
        found = tokens.get((str(r["condition"]), int(r["question_id"]), int(r["answer_idx"])))
        r["token_ids"] = found[1] if found and found[0] == answer_hash(r.get("question"), r.get("response")) else None
        out.append(r)
    return out


__all__ = ["IDS_FIELD", "attach_token_ids", "decode_ids", "encode_ids", "read_tokens", "write_tokens"]
