"""Contrastive datasets: the raw material of a steering vector.

A contrast pair is one prompt with two answers: the *positive* (honest, ``control``) answer and the
*negative* (metric-gaming, ``school_of_reward_hacks``) answer. Pairs come from

* the School of Reward Hacks dataset on the Hugging Face hub (:data:`SORH_DATASET`, columns
  ``user``, ``school_of_reward_hacks``, ``control``, ``task``, ``evaluation_metric``,
  ``cheat_method``),
* a local ``.jsonl`` / ``.json`` / ``.csv`` / ``.tsv`` / ``.parquet`` file with the same columns, or
  any prompt column and two answer columns named by the caller,
* the small dataset bundled with the package (``bundled``, :data:`BUNDLED_DATASET`), written for the
  offline demo and the tests.

Rows with an empty answer on either side (the SoRH coding rows have no ``control``) are skipped and
counted. Rows are shuffled deterministically by a seed; an optional held-out fraction is set aside
first, so the held-out ids do not depend on how many samples are then taken.

Prompt transforms, which rewrite the prompt before extraction, live in
:mod:`interp_playground.transforms`.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import sha256_file, stable_hash
from .vector_names import NEGATIVE_SIDE, POSITIVE_SIDE

SORH_DATASET = "longtermrisk/school-of-reward-hacks"
"""Hub id of the School of Reward Hacks dataset (the default source)."""

BUNDLED_DATASET = Path(__file__).resolve().parent / "resources" / "contrast_pairs.jsonl"
"""The small contrast dataset shipped with the package, in the SoRH schema."""

BUNDLED_NAME = "bundled"
"""The name that selects :data:`BUNDLED_DATASET` as a source."""

PROMPT_COLUMN = "user"
POSITIVE_COLUMN = "control"
NEGATIVE_COLUMN = "school_of_reward_hacks"


_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


@dataclass(frozen=True)
class ContrastPair:
    """One prompt with an honest (``positive``, control) and a reward-hacking (``negative``) answer.

    ``id`` is the row's 0-based index in the source (split), so that a result can be traced back.
    ``extra`` holds the source's other columns (``task``, ``evaluation_metric``, ...) as text.
    """

    id: int
    prompt: str
    positive: str
    negative: str
    extra: dict[str, str] = field(default_factory=dict)

    def answer(self, side: str) -> str:
        """The answer of ``side`` (``control`` or ``school_of_reward_hacks``)."""
        if side == POSITIVE_SIDE:
            return self.positive
        if side == NEGATIVE_SIDE:
            return self.negative
        raise ValueError(f"unknown side {side!r}")


@dataclass
class DatasetStats:
    """What was read, skipped, held out and selected — recorded in every vector file."""

    source: str
    kind: str  # "hub" | "file" | "bundled"
    split: str | None
    columns: dict[str, str]
    n_rows: int
    n_skipped_empty: dict[str, int]
    n_valid: int
    seed: int
    test_fraction: float
    test_ids: list[int]
    n_requested: int | None
    selected_ids: list[int]
    content_hash: str
    file_sha256: str | None = None

    @property
    def n_skipped(self) -> int:
        """Rows skipped because an answer (either side) was empty."""
        return self.n_rows - self.n_valid

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["n_skipped"] = self.n_skipped
        d["n_selected"] = len(self.selected_ids)
        return d


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return not str(value).strip()


def _text(value: Any) -> str:
    return "" if _is_empty(value) else str(value)


def _looks_like_path(source: str) -> bool:
    return source.lower().endswith(_FILE_SUFFIXES) or source.startswith((".", "/", "~")) or os.sep in source[:1]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{lineno} is not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno} is not a JSON object")
            rows.append(row)
    return rows


def _read_file(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and column names of a local table file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = _read_jsonl(path)
            columns: list[str] = []
            for r in rows:
                columns += [c for c in r if c not in columns]
            return rows, columns
        import pandas as pd

        if suffix == ".json":
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            if isinstance(data, dict) and isinstance(data.get("data", data.get("rows")), list):
                data = data.get("data", data.get("rows"))
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise UserError(f"{path} must hold a JSON list of objects (one per row)")
            frame = pd.DataFrame(data)
        elif suffix in (".csv", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str,
                                keep_default_na=False)
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            raise UserError(f"unsupported dataset file type {suffix!r}; use one of {', '.join(_FILE_SUFFIXES)}")
    except UserError:
        raise
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg})") from None
    except Exception as exc:  # pandas / pyarrow parse errors
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    return frame.to_dict(orient="records"), [str(c) for c in frame.columns]


def _read_hub(name: str, split: str) -> tuple[list[dict[str, Any]], list[str]]:
    from . import models  # deferred: torch and transformers (reading a local file needs neither)

    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if not offline and not models.hub_reachable():
        raise UserError(
            f"dataset {name} is not a local file and the Hugging Face hub is unreachable; "
            f"pass a local .jsonl/.csv/.parquet file or --dataset {BUNDLED_NAME}"
        )
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # network, missing dataset or split, cache miss when offline
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set)" if offline else "from the hub"
        raise UserError(
            f"cannot load dataset {name} (split {split}) {where}: {msg[:200]}; "
            f"pass a local .jsonl/.csv/.parquet file or --dataset {BUNDLED_NAME} to work without the hub"
        ) from None
    return [dict(r) for r in ds], list(ds.column_names)


def load_contrast_pairs(
    source: str | os.PathLike[str] = SORH_DATASET,
    *,
    prompt_column: str = PROMPT_COLUMN,
    positive_column: str = POSITIVE_COLUMN,
    negative_column: str = NEGATIVE_COLUMN,
    n_samples: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.0,
    split: str = "train",
) -> tuple[list[ContrastPair], DatasetStats]:
    """Read contrast pairs from a hub dataset, a local file or ``bundled``; return ``(pairs, stats)``.

    Rows with an empty prompt or an empty answer on either side are skipped and counted. The valid
    rows are shuffled with ``random.Random(seed)``; the first ``round(test_fraction * n_valid)``
    become the held-out set (ids in ``stats.test_ids``), and the first ``n_samples`` of the rest
    (all when ``None``) are returned. Raises a one-line ``UserError`` for a missing file or
    column, an unreachable hub, a bad fraction or count, or a dataset with no usable pair.
    """
    if n_samples is not None and (not isinstance(n_samples, int) or n_samples <= 0):
        raise UserError(f"--n-samples must be a positive integer, got {n_samples!r}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise UserError(f"--test-fraction must be in [0, 1), got {test_fraction!r}")
    source_str = str(source)
    file_sha = None
    if source_str == BUNDLED_NAME:
        kind, path = "bundled", BUNDLED_DATASET
    elif Path(source_str).expanduser().is_file():
        kind, path = "file", Path(source_str).expanduser()
    elif Path(source_str).expanduser().exists():
        raise UserError(f"dataset {source_str} is a folder; pass a .jsonl/.json/.csv/.tsv/.parquet file")
    elif _looks_like_path(source_str):
        raise UserError(f"dataset file {source_str} does not exist")
    else:
        kind, path = "hub", None
    if path is not None:
        rows, columns = _read_file(path)
        file_sha = sha256_file(path)
        split_used: str | None = None
    else:
        rows, columns = _read_hub(source_str, split)
        split_used = split
    if not rows:
        raise UserError(f"dataset {source_str} is empty")
    wanted = {"prompt": prompt_column, "positive": positive_column, "negative": negative_column}
    missing = [c for c in dict.fromkeys(wanted.values()) if c not in columns]
    if missing:
        raise UserError(
            f"dataset {source_str} lacks column(s) {', '.join(missing)} (it has: {', '.join(columns) or 'none'}); "
            f"name them with --prompt-column/--positive-column/--negative-column"
        )
    skipped = {"prompt": 0, POSITIVE_SIDE: 0, NEGATIVE_SIDE: 0}
    valid: list[ContrastPair] = []
    for i, row in enumerate(rows):
        prompt, pos, neg = (row.get(prompt_column), row.get(positive_column), row.get(negative_column))
        empty = False
        for key, value in (("prompt", prompt), (POSITIVE_SIDE, pos), (NEGATIVE_SIDE, neg)):
            if _is_empty(value):
                skipped[key] += 1
                empty = True
        if empty:
            continue
        extra = {str(k): _text(v) for k, v in row.items() if k not in wanted.values()}
        valid.append(ContrastPair(i, str(prompt), str(pos), str(neg), extra))
    if not valid:
        raise UserError(
            f"dataset {source_str} has no usable pair: all {len(rows)} rows have an empty prompt or answer"
        )
    order = list(range(len(valid)))
    random.Random(seed).shuffle(order)
    n_test = int(round(float(test_fraction) * len(valid)))
    if test_fraction > 0 and n_test >= len(valid):
        n_test = len(valid) - 1
    test = [valid[j] for j in order[:n_test]]
    train = [valid[j] for j in order[n_test:]]
    if not train:
        raise UserError(f"dataset {source_str} leaves no pair for extraction after the held-out split")
    selected = train if n_samples is None else train[:n_samples]
    stats = DatasetStats(
        source=source_str if kind != "file" else str(path),
        kind=kind,
        split=split_used,
        columns=dict(wanted),
        n_rows=len(rows),
        n_skipped_empty=skipped,
        n_valid=len(valid),
        seed=seed,
        test_fraction=float(test_fraction),
        test_ids=sorted(p.id for p in test),
        n_requested=n_samples,
        selected_ids=[p.id for p in selected],
        content_hash=stable_hash([[p.id, p.prompt, p.positive, p.negative] for p in valid]),
        file_sha256=file_sha,
    )
    return selected, stats
