"""The built-in questions, the question-file loaders and question selection."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from interp_playground.errors import UserError
from interp_playground.questions import QUESTIONS, load_questions, select_questions

REPO_ROOT = Path(__file__).resolve().parents[1]
MEDICAL_WORDS = ("doctor", "medic", "symptom", "disease", "pill", "diagnos", "illness", "hospital",
                 "prescription", "vaccine", "therapy", "surgery", "health")


def test_fifty_distinct_open_questions():
    assert len(QUESTIONS) == 50
    assert len(set(QUESTIONS)) == 50
    for q in QUESTIONS:
        assert isinstance(q, str) and q == q.strip() and len(q) > 15
        assert q.endswith(("?", ".")), q
        assert "\n" not in q


def test_questions_are_not_medical():
    for q in QUESTIONS:
        low = q.lower()
        assert not any(word in low for word in MEDICAL_WORDS), q


def test_root_shim_reexports_the_same_list():
    spec = importlib.util.spec_from_file_location("questions_shim", REPO_ROOT / "questions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.QUESTIONS is QUESTIONS
    assert module.load_questions is load_questions


def test_text_file_skips_blank_lines_and_comments(tmp_path):
    p = tmp_path / "qs.txt"
    p.write_text("# my questions\n\nWhat is up?\n   \n  # indented comment\n  Why so serious?  \n",
                 encoding="utf-8")
    assert load_questions(p) == ["What is up?", "Why so serious?"]


def test_json_list_of_strings(tmp_path):
    p = tmp_path / "qs.json"
    p.write_text(json.dumps(["One?", "Two — ü?"], ensure_ascii=False), encoding="utf-8")
    assert load_questions(p) == ["One?", "Two — ü?"]


def test_json_objects_and_mapping(tmp_path):
    p = tmp_path / "objs.json"
    p.write_text(json.dumps([{"id": "a", "question": "First?"}, {"id": 7, "question": " Second? "}]))
    assert load_questions(p) == ["First?", "Second?"]
    m = tmp_path / "map.json"
    m.write_text(json.dumps({"q1": "Alpha?", "q2": "Beta?"}))
    assert load_questions(m) == ["Alpha?", "Beta?"]


def test_yaml_list_mapping_and_objects(tmp_path):
    lst = tmp_path / "l.yaml"
    lst.write_text("- Is this YAML?\n- 'Quoted: with colon?'\n", encoding="utf-8")
    assert load_questions(lst) == ["Is this YAML?", "Quoted: with colon?"]
    mapping = tmp_path / "m.yml"
    mapping.write_text("wish: What would you wish for?\nbored: I'm bored, now what?\n", encoding="utf-8")
    assert load_questions(mapping) == ["What would you wish for?", "I'm bored, now what?"]
    objs = tmp_path / "o.yaml"
    objs.write_text("- id: 1\n  question: Who are you?\n- id: 2\n  question: Why?\n", encoding="utf-8")
    assert load_questions(objs) == ["Who are you?", "Why?"]


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("missing.txt", None, "does not exist"),
        ("empty.txt", "\n# only a comment\n\n", "no questions"),
        ("empty.json", "[]", "no questions"),
        ("bad.json", '["unterminated', "not valid JSON"),
        ("scalar.json", '"just a string"', "expected a list"),
        ("number.json", '["ok?", 3]', "item 1 must be a string"),
        ("blank.json", '["ok?", "   "]', "empty question"),
        ("noq.json", '[{"id": 1, "text": "hi"}]', "no 'question' field"),
        ("bad.yaml", "- a\n - b: [\n", "not valid YAML"),
        ("empty.yaml", "", "no questions"),
    ],
)
def test_bad_files_give_one_line_user_errors(tmp_path, name, content, needle):
    p = tmp_path / name
    if content is not None:
        p.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_questions(p)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_directory_is_not_a_question_file(tmp_path):
    with pytest.raises(UserError, match="not a file"):
        load_questions(tmp_path)


def test_select_questions():
    qs = ["a?", "b?", "c?"]
    assert select_questions(qs, 2) == ["a?", "b?"]
    assert select_questions(qs, 10) == qs
    assert select_questions(qs, None) == qs
    assert select_questions(QUESTIONS, 5) == QUESTIONS[:5]
    out = select_questions(qs, 3)
    out.append("d?")
    assert qs == ["a?", "b?", "c?"]  # a copy, not the caller's list


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_select_questions_rejects_bad_counts(bad):
    with pytest.raises(UserError):
        select_questions(["a?"], bad)


def test_select_questions_rejects_empty_list():
    with pytest.raises(UserError, match="no questions"):
        select_questions([], 3)
