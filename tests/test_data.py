"""Contrast datasets: bundled, local files, column mapping, the hub (and its failures)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from interp_playground.data import BUNDLED_DATASET, ContrastPair, load_contrast_pairs
from interp_playground.errors import UserError

SORH_COLUMNS = {"user", "school_of_reward_hacks", "control", "task", "evaluation_metric", "cheat_method"}


def _bundled_rows() -> list[dict]:
    return [json.loads(line) for line in BUNDLED_DATASET.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---- bundled dataset ---------------------------------------------------------------------------


def test_bundled_dataset_schema_and_skipping():
    rows = _bundled_rows()
    assert all(set(r) == SORH_COLUMNS for r in rows)
    empty_control = [i for i, r in enumerate(rows) if not r["control"].strip()]
    assert len(empty_control) >= 3  # coding rows exercise the skipping
    assert all(rows[i]["task"] == "write a function" for i in empty_control)
    pairs, stats = load_contrast_pairs("bundled")
    assert len(pairs) == len(rows) - len(empty_control) >= 40
    assert stats.n_rows == len(rows)
    assert stats.n_skipped == len(empty_control)
    assert stats.n_skipped_empty == {"prompt": 0, "control": len(empty_control), "school_of_reward_hacks": 0}
    assert not {p.id for p in pairs} & set(empty_control)
    # ids point back at the source rows, and the other columns travel along
    for p in pairs:
        r = rows[p.id]
        assert (p.prompt, p.positive, p.negative) == (r["user"], r["control"], r["school_of_reward_hacks"])
        assert p.extra == {"task": r["task"], "evaluation_metric": r["evaluation_metric"],
                           "cheat_method": r["cheat_method"]}
        assert p.positive != p.negative
    assert stats.kind == "bundled" and stats.file_sha256 and len(stats.content_hash) == 16


def test_shuffle_is_deterministic_and_prefix_stable():
    a, sa = load_contrast_pairs("bundled", n_samples=20, seed=3)
    b, _ = load_contrast_pairs("bundled", n_samples=20, seed=3)
    c, _ = load_contrast_pairs("bundled", n_samples=10, seed=3)
    d, _ = load_contrast_pairs("bundled", n_samples=20, seed=4)
    assert [p.id for p in a] == [p.id for p in b] == sa.selected_ids
    assert [p.id for p in c] == [p.id for p in a][:10]
    assert [p.id for p in d] != [p.id for p in a]
    assert sorted(p.id for p in a) != [p.id for p in a]  # really shuffled


def test_held_out_fraction_is_recorded_and_disjoint():
    pairs, stats = load_contrast_pairs("bundled", test_fraction=0.25, seed=1)
    n_valid = stats.n_valid
    assert len(stats.test_ids) == round(0.25 * n_valid)
    assert len(pairs) == n_valid - len(stats.test_ids)
    assert not set(stats.test_ids) & {p.id for p in pairs}
    # the held-out set does not depend on how many samples are then taken
    _, small = load_contrast_pairs("bundled", test_fraction=0.25, seed=1, n_samples=5)
    assert small.test_ids == stats.test_ids
    assert small.to_dict()["n_selected"] == 5


def test_n_samples_larger_than_dataset_uses_all():
    pairs, stats = load_contrast_pairs("bundled", n_samples=10_000)
    assert len(pairs) == stats.n_valid
    assert stats.n_requested == 10_000


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_n_samples(bad):
    with pytest.raises(UserError, match="n-samples"):
        load_contrast_pairs("bundled", n_samples=bad)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_bad_test_fraction(bad):
    with pytest.raises(UserError, match="test-fraction"):
        load_contrast_pairs("bundled", test_fraction=bad)


# ---- local files -------------------------------------------------------------------------------


def _custom_rows() -> list[dict]:
    return [
        {"question": "Q1?", "good": "honest one", "bad": "hack one", "note": "a"},
        {"question": "Q2?", "good": "", "bad": "hack two", "note": "b"},
        {"question": "Q3?", "good": "honest three", "bad": "hack three", "note": "c"},
        {"question": "Q4?", "good": "honest four", "bad": "   ", "note": "d"},
        {"question": "Q5?", "good": "honest five", "bad": "hack five", "note": "e"},
    ]


def _write(tmp_path, fmt: str, rows: list[dict]):
    path = tmp_path / f"pairs.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_local_files_with_named_columns(tmp_path, fmt):
    path = _write(tmp_path, fmt, _custom_rows())
    pairs, stats = load_contrast_pairs(path, prompt_column="question", positive_column="good",
                                       negative_column="bad", seed=0)
    assert sorted(p.id for p in pairs) == [0, 2, 4]
    by_id = {p.id: p for p in pairs}
    assert by_id[2] == ContrastPair(2, "Q3?", "honest three", "hack three", {"note": "c"})
    assert stats.n_skipped_empty == {"prompt": 0, "control": 1, "school_of_reward_hacks": 1}
    assert stats.kind == "file" and stats.columns == {"prompt": "question", "positive": "good", "negative": "bad"}


def test_same_rows_give_same_content_hash_across_formats(tmp_path):
    hashes = set()
    for fmt in ("jsonl", "csv", "parquet"):
        _, stats = load_contrast_pairs(_write(tmp_path, fmt, _custom_rows()), prompt_column="question",
                                       positive_column="good", negative_column="bad")
        hashes.add(stats.content_hash)
    assert len(hashes) == 1


def test_missing_values_in_parquet_are_empty(tmp_path):
    rows = _custom_rows()
    rows[0]["good"] = None
    path = _write(tmp_path, "parquet", rows)
    pairs, stats = load_contrast_pairs(path, prompt_column="question", positive_column="good", negative_column="bad")
    assert sorted(p.id for p in pairs) == [2, 4]
    assert stats.n_skipped_empty["control"] == 2


def test_missing_columns_are_named(tmp_path):
    path = _write(tmp_path, "csv", _custom_rows())
    with pytest.raises(UserError) as info:
        load_contrast_pairs(path, prompt_column="question")  # default answer columns are absent
    msg = str(info.value)
    assert "control" in msg and "school_of_reward_hacks" in msg and "\n" not in msg
    assert "question" in msg  # lists what the file has


def test_empty_and_unusable_datasets(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        load_contrast_pairs(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("user,control,school_of_reward_hacks\n")
    with pytest.raises(UserError, match="is empty"):
        load_contrast_pairs(header_only)
    useless = _write(tmp_path, "jsonl", [{"user": "q", "control": "", "school_of_reward_hacks": "x"}])
    with pytest.raises(UserError, match="no usable pair"):
        load_contrast_pairs(useless)


def test_bad_paths_and_bad_json(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_contrast_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="folder"):
        load_contrast_pairs(tmp_path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"user": "q"}\n{not json\n')
    with pytest.raises(UserError, match=r"broken.jsonl:2"):
        load_contrast_pairs(broken)


def test_unreachable_hub_is_one_line_error(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr("interp_playground.models.hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(UserError) as info:
        load_contrast_pairs("longtermrisk/school-of-reward-hacks")
    assert "unreachable" in str(info.value) and "\n" not in str(info.value)


def test_unreachable_hub_suggests_bundled(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr("interp_playground.models.hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(UserError, match="--dataset bundled"):
        load_contrast_pairs("longtermrisk/school-of-reward-hacks")


def test_hub_load_failure_suggests_bundled(monkeypatch):
    """The hub answers (or HF_HUB_OFFLINE is set) but the dataset cannot be loaded."""
    import datasets

    def fail(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'longtermrisk/school-of-reward-hacks' on the Hub\nmore details")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    monkeypatch.setattr("interp_playground.models.hub_reachable", lambda timeout=3.0: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with pytest.raises(UserError) as info:
        load_contrast_pairs("longtermrisk/school-of-reward-hacks")
    msg = str(info.value)
    assert "Couldn't reach" in msg and "--dataset bundled" in msg and "\n" not in msg
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="offline .*--dataset bundled"):
        load_contrast_pairs("longtermrisk/school-of-reward-hacks")
