"""Atomic writes and the JSON-lines journal."""

from __future__ import annotations

import os

from interp_playground.io import append_jsonl, atomic_write_json, read_json, read_jsonl


def test_atomic_write_replaces_whole_file_and_keeps_umask_mode(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": 1})
    atomic_write_json(path, {"x": 2})
    assert read_json(path) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_journal_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "j.jsonl"
    append_jsonl(path, [{"a": 1}, {"a": 2}])
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"a": 3, "tor')  # a crash in the middle of a record
    append_jsonl(path, [{"a": 4}])
    assert list(read_jsonl(path)) == [{"a": 1}, {"a": 2}, {"a": 4}]


def test_redact_url_removes_every_credential_and_nothing_else():
    from interp_playground.io import redact_url, redacted

    assert redact_url("http://u:p@host:8000/v1/") == "http://host:8000/v1/"
    assert redact_url("https://u:p@ss@h/x") == "https://h/x"  # an @ inside the password too
    assert redact_url("see http://a:b@h:1/x and https://c@d/") == "see http://h:1/x and https://d/"
    assert redact_url("mail me at a@b.org") == "mail me at a@b.org" and redact_url(3) == 3
    assert redacted({"u": ["http://k@h/"], "n": 1}) == {"u": ["http://h/"], "n": 1}


def test_redact_url_removes_query_strings_and_fragments():
    from interp_playground.io import redact_url, redacted

    line = "--judge-base-url http://u:p@h:8000/v1?key=sk-1&x=2 --x"
    assert redact_url(line) == "--judge-base-url http://h:8000/v1?<redacted> --x"
    assert redact_url("http://h:8000/v1?key=sk-1@x") == "http://h:8000/v1?<redacted>"  # an @ in the query
    assert redact_url("https://u:p?w@h/v1") == "https://h/v1"  # a ? inside the password: no part of it stays
    assert redact_url("HTTPS://h/v1#token=sk-2") == "HTTPS://h/v1#<redacted>"
    assert redact_url('{"url": "http://h/?k=sk-3", "x": "a?b"} \'http://g?k=sk-4\'') == (
        '{"url": "http://h/?<redacted>", "x": "a?b"} \'http://g?<redacted>\'')
    for unchanged in ["http://h:8000/v1", "https://h/v1/", "what? yes#1", "file:///tmp/a?b", "a@b.org?", ""]:
        assert redact_url(unchanged) == unchanged
    once = redact_url(line)
    assert redact_url(once) == once  # recorded text may be redacted again (sanitize_url, then redacted())
    nested = {"judge": {"base_url": "http://h/v1?api_key=sk-5", "n": 2, "ok": None},
              "command": ["eval", "--judge-base-url", "https://k@h/v1#sk-6"]}
    assert redacted(nested) == {"judge": {"base_url": "http://h/v1?<redacted>", "n": 2, "ok": None},
                                "command": ["eval", "--judge-base-url", "https://h/v1#<redacted>"]}
    assert "sk-" not in str(redacted(nested))
